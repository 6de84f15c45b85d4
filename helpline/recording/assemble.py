"""A spooled recording becomes one stereo WAV, with the per-segment hashes the manifest chains.

The WAV is PCM16 at 8 kHz, two channels (left: the caller, right: what the caller heard), with the
standard 44-byte header, so any player, the stdlib ``wave`` module and an HTTP Range request for a
time span (``44 + 4 * 8000 * seconds``) all work on it directly.

Segments go in index order. A segment missing in the middle (its write failed, or a crash tore it)
is filled with silence of a full segment's length so the timeline keeps its wall-clock meaning, and
shows as a ``gap`` overlay. Each segment's hash covers exactly the bytes it contributes to the WAV.

Blocking file work: call ``assemble`` from a thread.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpline.recording.spool import SpooledRecording, overlays_from_events
from helpline.voice.g711 import FRAME_MS, FRAME_PCM_BYTES, SAMPLE_RATE, SAMPLE_WIDTH

log = logging.getLogger(__name__)

CHANNELS = 2
WAV_HEADER_BYTES = 44
STEREO_FRAME_BYTES = CHANNELS * FRAME_PCM_BYTES
_WAV_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")
_MAX_DATA = 0xFFFFFFFF - (WAV_HEADER_BYTES - 8)


@dataclass(frozen=True, slots=True)
class AssembledSegment:
    """One segment as it went into the WAV."""

    index: int
    frames: int
    sha256: str  # of this segment's PCM bytes in the WAV's data chunk


@dataclass(frozen=True, slots=True)
class Assembled:
    """What ``assemble`` wrote and measured."""

    wav: Path
    recording_id: str
    segments: list[AssembledSegment]
    frames: int
    duration: float  # seconds
    overlays: list[dict[str, Any]]
    meta: dict[str, Any]
    audio_sha256: str  # of the WAV's data chunk
    closed: bool  # the capture finished normally (False: recovered after a crash)


def wav_header(data_bytes: int, *, channels: int = CHANNELS, rate: int = SAMPLE_RATE) -> bytes:
    """The canonical 44-byte header of a PCM16 WAV holding ``data_bytes`` of samples."""
    if data_bytes > _MAX_DATA:
        raise ValueError(f"{data_bytes} bytes of audio do not fit in a WAV file")
    block = channels * SAMPLE_WIDTH
    return _WAV_HEADER.pack(b"RIFF", WAV_HEADER_BYTES - 8 + data_bytes, b"WAVE", b"fmt ", 16, 1, channels,
                            rate, rate * block, block, 8 * SAMPLE_WIDTH, b"data", data_bytes)


def assemble(spooled: SpooledRecording, out_wav: Path) -> Assembled:
    """Write ``spooled``'s audio to ``out_wav`` (fsynced) and describe it."""
    full = spooled.segment_frames * STEREO_FRAME_BYTES
    last = max(spooled.segments, default=-1)
    plan: list[tuple[int, Path | None, int]] = []  # (index, file or None for a gap, bytes taken)
    for index in range(last + 1):
        path = spooled.segments.get(index)
        if path is None:
            plan.append((index, None, full))
            continue
        size = path.stat().st_size
        whole = size - size % STEREO_FRAME_BYTES
        if whole != size:
            log.warning("%s: %d trailing bytes are not a whole frame, dropped", path, size - whole)
        plan.append((index, path, whole))
    total = sum(size for _, _, size in plan)
    segments: list[AssembledSegment] = []
    gaps: list[dict[str, Any]] = []
    audio = hashlib.sha256()
    frame = 0
    with open(out_wav, "wb") as out:
        out.write(wav_header(total))
        for index, path, size in plan:
            data = bytes(size) if path is None else _read(path, size)
            out.write(data)
            audio.update(data)
            frames = size // STEREO_FRAME_BYTES
            segments.append(AssembledSegment(index, frames, hashlib.sha256(data).hexdigest()))
            if path is None:
                log.warning("%s: segment %d missing, filled with %d frames of silence", spooled.path,
                            index, frames)
                gaps.append({"kind": "gap", "start": frame, "end": frame + frames})
            frame += frames
        out.flush()
        os.fsync(out.fileno())
    overlays = overlays_from_events(spooled.events, frame) + gaps
    overlays.sort(key=lambda o: (o.get("start", o.get("frame", 0)), o["kind"]))
    return Assembled(
        wav=out_wav, recording_id=spooled.recording_id, segments=segments, frames=frame,
        duration=frame * FRAME_MS / 1000, overlays=overlays, meta=dict(spooled.meta),
        audio_sha256=audio.hexdigest(), closed=spooled.closed,
    )


def _read(path: Path, size: int) -> bytes:
    with open(path, "rb") as file:
        data = file.read(size)
    if len(data) != size:
        raise OSError(f"{path}: expected {size} bytes, read {len(data)} (file changed while assembling)")
    return data
