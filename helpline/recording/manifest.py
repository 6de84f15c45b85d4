"""The sealed manifest of one recording: what was recorded, its segment hash chain, and its signature.

A recording is evidence only if a reviewer can show it is the audio captured at the time, whole, and
that anything changed since is found and located. So each segment of interleaved stereo PCM (as it lies
in the WAV ``data`` chunk) is hashed, the hashes are chained (dropping, reordering or inserting a
segment breaks the chain), and the manifest holding them is signed with Ed25519 over its canonical
JSON (sorted keys, no spaces, UTF-8). ``check_audio`` re-cuts the audio by the manifest's segment
frame counts and names the segment that no longer matches, or where the audio was cut or extended.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from helpline.recording.keys import SigningKey, verify_signature

MANIFEST_VERSION = 1
CHAIN_SEED = b"helpline-rec-v1"
SAMPLE_BYTES = 2  # pcm_s16le
_BLOCK = 64 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding of a check. ``code`` is stable (for JSON and the UI badge); ``message`` is for people."""

    code: str
    message: str
    recording_id: str | None = None
    segment: int | None = None
    line: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def __str__(self) -> str:
        return f"{self.recording_id}: {self.message}" if self.recording_id else self.message


class SegmentHash(NamedTuple):
    """One segment as assembly reports it: its length in 20 ms frames and the SHA-256 (hex) of its PCM."""

    frames: int
    sha256: str


class ByteSource(Protocol):
    """Random-access bytes: a plain file (``FileSource``), a ``DecryptingReader``, a zip member."""

    @property
    def size(self) -> int: ...

    def read(self, offset: int, length: int) -> bytes: ...


class FileSource:
    """A plain file as a ``ByteSource`` (``os.pread``: no shared file position)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY)
        self.size: int = os.fstat(self._fd).st_size

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self._fd, length, offset)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def iso_utc(moment: datetime) -> str:
    """``2024-05-01T12:00:00.123456Z``: one spelling of UTC instants in manifests and the ledger."""
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no defined instant; pass an aware one")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def canonical(obj: Any) -> bytes:
    """The one byte form that is hashed and signed: sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def segment_chain(hashes: Iterable[str]) -> list[str]:
    """The running chain over segment hashes (hex in, hex out), over raw digests:
    ``chain_0 = sha256(b"helpline-rec-v1" + h_0)``, ``chain_i = sha256(chain_{i-1} + h_i + i as u64 BE)``."""
    chain: list[str] = []
    previous = b""
    for i, h in enumerate(hashes):
        digest = bytes.fromhex(h)
        if i == 0:
            previous = hashlib.sha256(CHAIN_SEED + digest).digest()
        else:
            previous = hashlib.sha256(previous + digest + i.to_bytes(8, "big")).digest()
        chain.append(previous.hex())
    return chain


def consent_digest(record: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a consent evidence record's canonical JSON without its own ``record_sha256``:
    the value the manifest's ``consent`` entry carries for that record."""
    return sha256_hex(canonical({k: v for k, v in record.items() if k != "record_sha256"}))


def _segment_hash(seg: Any) -> SegmentHash:
    if isinstance(seg, Mapping):
        return SegmentHash(int(seg["frames"]), str(seg["sha256"]))
    if hasattr(seg, "frames") and hasattr(seg, "sha256"):
        return SegmentHash(int(seg.frames), str(seg.sha256))
    frames, digest = seg
    return SegmentHash(int(frames), str(digest))


DEFAULT_FORMAT: Mapping[str, Any] = {"container": "wav", "encoding": "pcm_s16le", "rate": 8000, "channels": 2}


def build_manifest(
    *,
    recording_id: str,
    call_id: str,
    created_at: datetime,
    channels: Sequence[Mapping[str, Any]],
    segments: Iterable[Any],
    audio_sha256: str,
    recorder: str,
    media_format: Mapping[str, Any] = DEFAULT_FORMAT,
    duration_frames: int | None = None,
    overlays: Sequence[Mapping[str, Any]] = (),
    consent: Sequence[Mapping[str, Any]] = (),
    recovered: bool = False,
    encryption: Mapping[str, Any] | None = None,
    frame_ms: int = 20,
) -> dict[str, Any]:
    """The version-1 manifest.

    ``segments`` in order, each a ``SegmentHash``/``(frames, sha256)`` pair, a mapping or an object
    with ``frames`` and ``sha256``; ``duration_frames``, when given, must equal their sum. ``consent``
    holds references ``{"id", "sha256"}`` (``sha256`` = ``consent_digest(record)``); extra keys are
    dropped. ``encryption`` is ``EncryptedFile.manifest_entry()`` or None."""
    segs = [_segment_hash(s) for s in segments]
    for i, seg in enumerate(segs):
        if seg.frames <= 0:
            raise ValueError(f"segment {i}: frames must be positive, got {seg.frames}")
        if not _HEX64.fullmatch(seg.sha256):
            raise ValueError(f"segment {i}: sha256 must be 64 lowercase hex digits")
    total = sum(s.frames for s in segs)
    if duration_frames is not None and duration_frames != total:
        raise ValueError(f"duration_frames {duration_frames} differs from the segments' {total} frames")
    if int(media_format["channels"]) != 2 or media_format["encoding"] != "pcm_s16le":
        raise ValueError(f"only stereo pcm_s16le WAV is sealed, not {dict(media_format)}")
    chain = segment_chain(s.sha256 for s in segs)
    return {
        "v": MANIFEST_VERSION,
        "recording_id": recording_id,
        "call_id": call_id,
        "created_at": iso_utc(created_at),
        "format": dict(media_format),
        "channels": [dict(c) for c in channels],
        "duration_frames": total,
        "frame_ms": frame_ms,
        "segments": [
            {"index": i, "frames": s.frames, "sha256": s.sha256, "chain": c}
            for i, (s, c) in enumerate(zip(segs, chain, strict=True))
        ],
        "chain_head": chain[-1] if chain else sha256_hex(CHAIN_SEED),
        "audio_sha256": audio_sha256,
        "overlays": [dict(o) for o in overlays],
        "consent": [{"id": str(c["id"]), "sha256": str(c["sha256"])} for c in consent],
        "recovered": recovered,
        "recorder": recorder,
        "encryption": dict(encryption) if encryption is not None else None,
    }


def sign_manifest(manifest: Mapping[str, Any], key: SigningKey) -> tuple[bytes, str]:
    """The canonical manifest bytes (write them as ``manifest.json``) and their signature in base64
    (``manifest.sig``)."""
    data = canonical(manifest)
    return data, base64.b64encode(key.sign(data)).decode("ascii")


def _frame_bytes(manifest: Mapping[str, Any]) -> int:
    fmt = manifest["format"]
    return int(fmt["rate"]) * int(manifest["frame_ms"]) // 1000 * int(fmt["channels"]) * SAMPLE_BYTES


def check_manifest(manifest_bytes: bytes, sig_b64: str, public_key: Ed25519PublicKey) -> list[Problem]:
    """The signature over the exact bytes, then the manifest's own consistency (chain, head, length)."""
    problems: list[Problem] = []
    rid: str | None = None
    try:
        manifest = json.loads(manifest_bytes)
        if isinstance(manifest, dict) and isinstance(manifest.get("recording_id"), str):
            rid = manifest["recording_id"]
    except (UnicodeDecodeError, ValueError) as exc:
        manifest = None
        problems.append(Problem("manifest-malformed", f"manifest is not JSON ({exc})"))
    try:
        signature = base64.b64decode(sig_b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        problems.append(Problem("manifest-signature", "manifest.sig is not base64", rid))
    else:
        if not verify_signature(public_key, signature, manifest_bytes):
            problems.append(
                Problem(
                    "manifest-signature",
                    "manifest signature does not verify: the manifest was edited, or signed by another key",
                    rid,
                )
            )
    if manifest is None:
        return problems
    if not isinstance(manifest, dict):
        problems.append(Problem("manifest-malformed", "manifest is not a JSON object", rid))
        return problems
    try:
        problems.extend(_check_structure(manifest, rid))
    except (KeyError, TypeError, ValueError) as exc:
        problems.append(
            Problem("manifest-malformed", f"manifest is missing or misspells a field ({exc!r})", rid)
        )
    return problems


def _check_structure(manifest: dict[str, Any], rid: str | None) -> list[Problem]:
    problems: list[Problem] = []
    if manifest["v"] != MANIFEST_VERSION:
        return [Problem("manifest-malformed", f"unsupported manifest version {manifest['v']!r}", rid)]
    segments = manifest["segments"]
    hashes: list[str] = []
    total = 0
    for i, seg in enumerate(segments):
        if seg["index"] != i:
            problems.append(
                Problem("manifest-inconsistent", f"segment at position {i} says index {seg['index']}", rid, i)
            )
        if not isinstance(seg["frames"], int) or seg["frames"] <= 0:
            problems.append(Problem("manifest-inconsistent", f"segment {i} has no frames", rid, i))
        if not isinstance(seg["sha256"], str) or not _HEX64.fullmatch(seg["sha256"]):
            problems.append(Problem("manifest-malformed", f"segment {i} hash is not SHA-256 hex", rid, i))
            return problems
        hashes.append(seg["sha256"])
        total += int(seg["frames"])
    chain = segment_chain(hashes)
    for i, (seg, expected) in enumerate(zip(segments, chain, strict=True)):
        if seg["chain"] != expected:
            problems.append(
                Problem("manifest-inconsistent", f"segment {i} chain value does not follow", rid, i)
            )
            break
    head = chain[-1] if chain else sha256_hex(CHAIN_SEED)
    if manifest["chain_head"] != head:
        problems.append(Problem("manifest-inconsistent", "chain head does not match the segment hashes", rid))
    if manifest["duration_frames"] != total:
        problems.append(
            Problem(
                "manifest-inconsistent",
                f"duration_frames is {manifest['duration_frames']} but the segments hold {total}",
                rid,
            )
        )
    if _frame_bytes(manifest) <= 0:
        problems.append(Problem("manifest-malformed", "format/frame_ms give an empty frame", rid))
    return problems


@dataclass(frozen=True, slots=True)
class WavLayout:
    rate: int
    channels: int
    bits: int
    data_offset: int
    data_size: int  # what the data chunk holds in this file (a declared size beyond the end is cut back)


def wav_layout(source: ByteSource) -> WavLayout:
    """Where the PCM is in a WAV: walks the RIFF chunks for ``fmt `` and ``data``. Raises ValueError."""
    head = source.read(0, 12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    pos = 12
    fmt: tuple[int, int, int] | None = None
    while pos + 8 <= source.size:
        cid, size = struct.unpack("<4sI", source.read(pos, 8))
        body = pos + 8
        if cid == b"fmt ":
            raw = source.read(body, 16)
            if len(raw) < 16:
                raise ValueError("fmt chunk is short")
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", raw)
            if tag not in (1, 0xFFFE):
                raise ValueError(f"WAV format tag {tag:#x} is not PCM")
            fmt = (rate, channels, bits)
        elif cid == b"data":
            if fmt is None:
                raise ValueError("data chunk comes before fmt")
            return WavLayout(fmt[0], fmt[1], fmt[2], body, min(size, source.size - body))
        pos = body + size + (size & 1)
    raise ValueError("no data chunk")


def check_audio(manifest: Mapping[str, Any], source: Path | ByteSource) -> list[Problem]:
    """Re-cut the WAV's PCM by the manifest's segment frame counts and compare every hash.

    Names each changed segment (with its time span), where the audio was cut short or extended, and a
    mismatch of the whole-audio hash. ``source`` is a plain WAV path or any ``ByteSource`` (e.g. a
    ``DecryptingReader`` over ``audio.wav.enc``). Decryption errors propagate to the caller."""
    if isinstance(source, Path):
        file_source = FileSource(source)
        try:
            return _check_audio(manifest, file_source)
        finally:
            file_source.close()
    return _check_audio(manifest, source)


def _span(start: int, frames: int, frame_ms: int) -> str:
    s, e = start * frame_ms / 1000, (start + frames) * frame_ms / 1000
    return f"frames {start}-{start + frames}, {s:.2f}-{e:.2f} s"


def _check_audio(manifest: Mapping[str, Any], source: ByteSource) -> list[Problem]:
    rid = manifest.get("recording_id")
    try:
        layout = wav_layout(source)
    except ValueError as exc:
        return [Problem("audio-malformed", f"audio is not a readable WAV ({exc})", rid)]
    fmt = manifest["format"]
    if (layout.rate, layout.channels, layout.bits) != (fmt["rate"], fmt["channels"], 8 * SAMPLE_BYTES):
        return [
            Problem(
                "audio-format",
                f"WAV is {layout.rate} Hz, {layout.channels} ch, {layout.bits} bit; the manifest says "
                f"{fmt['rate']} Hz, {fmt['channels']} ch, 16 bit",
                rid,
            )
        ]
    frame_ms = int(manifest["frame_ms"])
    frame_bytes = _frame_bytes(manifest)
    problems: list[Problem] = []
    whole = hashlib.sha256()
    pos = 0  # relative to the data chunk
    frame = 0
    size = layout.data_size

    def take(n: int) -> bytes:
        nonlocal pos
        data = source.read(layout.data_offset + pos, n)
        pos += len(data)
        whole.update(data)
        return data

    for seg in manifest["segments"]:
        index, frames = int(seg["index"]), int(seg["frames"])
        wanted = frames * frame_bytes
        if pos >= size:
            problems.append(
                Problem(
                    "audio-truncated",
                    f"audio ends before segment {index} ({_span(frame, 0, frame_ms)}): "
                    f"{manifest['duration_frames'] - frame} frames are missing",
                    rid,
                    index,
                )
            )
            break
        seg_hash = hashlib.sha256()
        got = 0
        while got < wanted and pos < size:
            data = take(min(_BLOCK, wanted - got, size - pos))
            if not data:
                size = pos  # the source ended before its declared size
                break
            seg_hash.update(data)
            got += len(data)
        if got < wanted:
            problems.append(
                Problem(
                    "audio-truncated",
                    f"audio ends inside segment {index} ({_span(frame, frames, frame_ms)}): "
                    f"{got} of {wanted} bytes present",
                    rid,
                    index,
                )
            )
            break
        if seg_hash.hexdigest() != seg["sha256"]:
            problems.append(
                Problem(
                    "segment-changed",
                    f"segment {index} changed ({_span(frame, frames, frame_ms)})",
                    rid,
                    index,
                )
            )
        frame += frames
    else:
        if pos < size:
            extra = size - pos
            while pos < size and take(min(_BLOCK, size - pos)):
                pass
            problems.append(
                Problem(
                    "audio-extended",
                    f"audio has {extra} bytes ({extra / frame_bytes * frame_ms / 1000:.2f} s) "
                    "after the sealed end",
                    rid,
                )
            )
    if not problems and whole.hexdigest() != manifest["audio_sha256"]:
        problems.append(Problem("audio-hash", "whole-audio hash differs although every segment matches", rid))
    return problems
