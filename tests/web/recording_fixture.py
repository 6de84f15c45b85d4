"""A sealed recording in real storage, built with the recording package's own sealing pieces (manifest,
signature, ledger, storage, encryption), for the recordings API and UI tests.

The audio is synthetic and easy to recognise: a 440 Hz tone on the left (caller) channel and 1000 Hz on
the right (what the caller heard), each with a per-second amplitude step so that any two seconds of
the file differ (a served byte can be traced to the second it belongs to).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import uuid
import wave
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from helpline.recording.crypto import encrypt_file
from helpline.recording.keys import Kek, SigningKey
from helpline.recording.ledger import Ledger
from helpline.recording.library import RecordingLibrary
from helpline.recording.manifest import build_manifest, consent_digest, sign_manifest
from helpline.recording.peaks import compute_peaks
from helpline.recording.storage import LocalStorage
from helpline.store.recordings import ConsentRow, RecordingRow
from helpline.store.store import Store

RATE = 8000
FRAMES_PER_SECOND = 50
BYTES_PER_SECOND = RATE * 2 * 2
SEGMENT_FRAMES = 50
CHANNELS = [
    {"channel": 0, "side": "left", "role": "caller", "party": "+15551230001"},
    {"channel": 1, "side": "right", "role": "agent", "party": "agents and system prompts"},
]


def stereo_tones(seconds: int) -> bytes:
    """Interleaved PCM16: 440 Hz left, 1000 Hz right, louder each second (8 kHz)."""
    t = np.arange(seconds * RATE) / RATE
    step = 0.2 + 0.6 * ((np.floor(t) % 10) / 10)
    left = np.sin(2 * np.pi * 440 * t) * step * 20000
    right = np.sin(2 * np.pi * 1000 * t) * step * 12000
    return np.column_stack([left, right]).astype("<i2").tobytes()


def wav_file(pcm: bytes) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm)
    return out.getvalue()


@dataclass
class Archive:
    """Storage, keys and ledger of one test's recording archive, and the library over them."""

    root: Path
    storage: LocalStorage
    signing: SigningKey
    ledger: Ledger
    kek: Kek
    store: Store

    @property
    def public_key_path(self) -> Path:
        return self.storage.public_key_path

    def library(self) -> RecordingLibrary:
        return RecordingLibrary(self.store, self.storage, self.public_key_path, self.kek, self.ledger)

    async def seal(
        self,
        *,
        seconds: int = 60,
        caller: str = "+15551230001",
        did: str = "+18005550100",
        agent: str | None = "1001",
        queue: str | None = "support",
        started_at: datetime | None = None,
        encrypted: bool = False,
        floor_days: int = 0,
        consent_outcome: str = "granted",
        disposition: str = "completed",
    ) -> tuple[RecordingRow, bytes]:
        """Seal and store one recording the way the service does; returns its row and its WAV."""
        started = started_at or datetime.now(UTC) - timedelta(days=2)
        recording_id, call_id = uuid.uuid4().hex, uuid.uuid4().hex
        pcm = stereo_tones(seconds)
        wav = wav_file(pcm)
        consent = await self._consent(call_id, started, consent_outcome)
        work = self.root / "work" / recording_id
        work.mkdir(parents=True)
        segment_bytes = SEGMENT_FRAMES * 640
        segments = [
            (SEGMENT_FRAMES, hashlib.sha256(pcm[i : i + segment_bytes]).hexdigest())
            for i in range(0, len(pcm), segment_bytes)
        ]
        overlays = [
            {"kind": "consent", "frame": 0, "data": {"outcome": consent_outcome, "method": "dtmf"}},
            {"kind": "agent", "frame": 5 * FRAMES_PER_SECOND, "data": {"agent": agent}},
            {"kind": "pause", "reason": "sensitive", "start": 42 * FRAMES_PER_SECOND,
             "end": 50 * FRAMES_PER_SECOND},
            {"kind": "hold", "frame": 20 * FRAMES_PER_SECOND, "data": {"held": True}},
            {"kind": "hold", "frame": 25 * FRAMES_PER_SECOND, "data": {"held": False}},
        ]  # fmt: skip
        (work / "audio.wav").write_bytes(wav)
        peaks = compute_peaks(work / "audio.wav")
        encryption = None
        if encrypted:
            dek = bytes(range(32))
            sealed = encrypt_file(work / "audio.wav", work / "audio.wav.enc", dek)
            (work / "key.wrapped").write_bytes(self.kek.wrap(dek))
            (work / "audio.wav").unlink()
            encryption = sealed.manifest_entry()
        manifest = build_manifest(
            recording_id=recording_id, call_id=call_id, created_at=started + timedelta(seconds=seconds),
            channels=CHANNELS, segments=segments, audio_sha256=hashlib.sha256(pcm).hexdigest(),
            recorder="helpline test", overlays=overlays,
            consent=[{"id": consent.id, "sha256": consent.record_sha256}], encryption=encryption,
        )  # fmt: skip
        manifest_bytes, signature = sign_manifest(manifest, self.signing)
        (work / "manifest.json").write_bytes(manifest_bytes)
        (work / "manifest.sig").write_text(signature)
        (work / "peaks.json").write_text(json.dumps(peaks))
        (work / "consent.json").write_text(json.dumps([consent.model_dump(mode="json")]))
        (work / "metadata.json").write_text(json.dumps({"recording_id": recording_id, "call_id": call_id}))
        key = await self.storage.put_dir(recording_id, started, {p.name: p for p in work.iterdir()})
        manifest_sha = hashlib.sha256(manifest_bytes).hexdigest()
        await asyncio.to_thread(self.ledger.append_sealed, recording_id, manifest_sha)
        audio_name = "audio.wav.enc" if encrypted else "audio.wav"
        row = await self.store.recordings.insert({
            "id": recording_id, "call_id": call_id, "status": "stored", "caller": caller, "did": did,
            "queue": queue, "agent": agent, "agents": [{"agent": agent, "frame": 250}] if agent else [],
            "started_at": started, "ended_at": started + timedelta(seconds=seconds),
            "duration_s": float(seconds), "channels": CHANNELS,
            "media_format": {"container": "wav", "encoding": "pcm_s16le", "rate": RATE, "channels": 2},
            "overlays": overlays, "consent_outcome": consent_outcome,
            "consent_ids": [{"id": consent.id, "sha256": consent.record_sha256, "outcome": consent_outcome}],
            "policy": {"mode": "consent"}, "retention_policy": "default",
            "delete_after": started + timedelta(days=365),
            "floor_until": started + timedelta(days=floor_days),
            "legal_hold": None, "storage_key": key, "encrypted": encrypted,
            "size_bytes": (self.storage.path_of(key) / audio_name).stat().st_size,
            "manifest_sha256": manifest_sha, "disposition": disposition, "deleted_at": None, "deletion": None,
        })  # fmt: skip
        return row, wav

    async def _consent(self, call_id: str, at: datetime, outcome: str) -> ConsentRow:
        record: dict[str, Any] = {
            "id": uuid.uuid4().hex, "call_id": call_id, "party": "caller", "outcome": outcome,
            "method": "dtmf", "response": "1", "policy_id": "default", "policy_version": "1",
            "mode": "consent", "jurisdiction": {"caller": "US-TX"}, "prompt_id": "consent-en",
            "language": "en", "prompt_sha256": "0" * 64, "prompt_started_at": at,
            "prompt_ended_at": at + timedelta(seconds=4), "responded_at": at + timedelta(seconds=5),
            "decided_at": at + timedelta(seconds=5), "clock_source": "system", "record_sha256": "",
        }  # fmt: skip
        as_json = ConsentRow.model_validate(record).model_dump(mode="json")
        record["record_sha256"] = consent_digest(as_json)
        return await self.store.consent.append(record)


def make_archive(root: Path, store: Store) -> Archive:
    storage = LocalStorage(root / "recordings")
    signing = SigningKey.load_or_create(root / "keys" / "recording-signing.pem")
    signing.export_public(storage.public_key_path)
    kek = Kek.load_or_create(root / "keys" / "recording-kek.bin")
    return Archive(root, storage, signing, Ledger(storage.ledger_path, signing), kek, store)
