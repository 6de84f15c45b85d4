"""What the sealing tests share: sample recordings built with ``wave``/numpy and hashed with hashlib
directly (not with the code under test), and a store of recordings sealed the way the service does it
(optional encryption, a signed manifest, ``LocalStorage`` and a ``sealed`` ledger entry)."""

from __future__ import annotations

import hashlib
import json
import wave
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from helpline.recording.crypto import encrypt_file
from helpline.recording.keys import Kek, SigningKey, new_data_key
from helpline.recording.ledger import Ledger
from helpline.recording.manifest import (
    SegmentHash,
    build_manifest,
    consent_digest,
    sha256_hex,
    sign_manifest,
)
from helpline.recording.storage import LocalStorage

STARTED = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


FRAME_BYTES = 640  # 20 ms: 160 samples x 2 channels x 2 bytes
SEGMENTS = (50, 50, 50, 50, 23)  # four full seconds and a short last segment


@dataclass
class Sample:
    wav: Path
    segments: list[SegmentHash]
    audio_sha256: str
    data_offset: int  # where the PCM starts in the WAV file


def sample_recording(path: Path, segment_frames: tuple[int, ...] = SEGMENTS, seed: int = 1) -> Sample:
    """A stereo 8 kHz WAV of noise (distinct per channel) and its per-segment SHA-256."""
    rng = np.random.default_rng(seed)
    frames = sum(segment_frames)
    samples = rng.integers(-8000, 8000, size=(frames * 160, 2), dtype=np.int16)
    pcm = samples.astype("<i2").tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(pcm)
    segments = []
    pos = 0
    for n in segment_frames:
        chunk = pcm[pos : pos + n * FRAME_BYTES]
        segments.append(SegmentHash(n, hashlib.sha256(chunk).hexdigest()))
        pos += n * FRAME_BYTES
    data_offset = path.read_bytes().index(b"data") + 8
    return Sample(path, segments, hashlib.sha256(pcm).hexdigest(), data_offset)


CONSENT_RECORD = {
    "id": "c0ffee",
    "call_id": "call-1",
    "party": "caller",
    "outcome": "granted",
    "method": "dtmf",
    "decided_at": "2024-05-01T12:00:03.250000Z",
}


def sample_manifest(sample: Sample, recording_id: str = "rec-1", **overrides: object) -> dict[str, object]:
    record = {**CONSENT_RECORD, "record_sha256": consent_digest(CONSENT_RECORD)}
    fields: dict[str, object] = {
        "recording_id": recording_id,
        "call_id": "call-1",
        "created_at": datetime(2024, 5, 1, 12, 5, tzinfo=UTC),
        "channels": [
            {"channel": 0, "role": "caller", "party": "+15551230000"},
            {"channel": 1, "role": "agent", "party": "agent/system: what the caller heard"},
        ],
        "segments": sample.segments,
        "audio_sha256": sample.audio_sha256,
        "recorder": "helpline test",
        "overlays": [{"kind": "pause", "reason": "sensitive", "start": 60, "end": 90}],
        "consent": [{"id": record["id"], "sha256": record["record_sha256"], "outcome": "granted"}],
        **overrides,
    }
    return build_manifest(**fields)  # type: ignore[arg-type]


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0x01]))


STARTED = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@dataclass
class Sealed:
    recording_id: str
    key: str
    directory: Path
    data_offset: int
    manifest: dict[str, object]


@dataclass
class Store:
    storage: LocalStorage
    signing: SigningKey
    ledger: Ledger
    kek: Kek
    work: Path

    @property
    def root(self) -> Path:
        return self.storage.root


def make_store(tmp_path: Path) -> Store:
    storage = LocalStorage(tmp_path / "recordings")
    signing = SigningKey.load_or_create(tmp_path / "keys" / "recording-signing.pem")
    signing.export_public(storage.public_key_path)
    return Store(
        storage,
        signing,
        Ledger(storage.ledger_path, signing),
        Kek.load_or_create(tmp_path / "keys" / "kek"),
        tmp_path,
    )


async def seal_sample(store: Store, recording_id: str, *, encrypt: bool = False, seed: int = 1) -> Sealed:
    """Seal a sample recording into ``store`` the way the service does."""
    work = store.work / f"work-{recording_id}"
    work.mkdir()
    sample = sample_recording(work / "audio.wav", seed=seed)
    record = {**CONSENT_RECORD, "record_sha256": consent_digest(CONSENT_RECORD)}
    encryption = None
    if encrypt:
        dek = new_data_key()
        encryption = encrypt_file(sample.wav, work / "audio.wav.enc", dek).manifest_entry()
        (work / "key.wrapped").write_bytes(store.kek.wrap(dek))
        sample.wav.unlink()
    manifest = sample_manifest(sample, recording_id, encryption=encryption)
    data, sig = sign_manifest(manifest, store.signing)
    (work / "manifest.json").write_bytes(data)
    (work / "manifest.sig").write_text(sig + "\n")
    (work / "consent.json").write_text(json.dumps([record], indent=1))
    (work / "metadata.json").write_text(json.dumps({"caller": "+15551230000"}))
    key = await store.storage.put_dir(recording_id, STARTED, {p.name: p for p in work.iterdir()})
    store.ledger.append_sealed(recording_id, sha256_hex(data))
    return Sealed(recording_id, key, store.storage.path_of(key), sample.data_offset, manifest)


