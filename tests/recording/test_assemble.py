"""Assembling a spool into one WAV (read back with the stdlib ``wave`` module), its hashes, the gap
left by a missing segment, and the waveform peaks of the result."""

from __future__ import annotations

import asyncio
import hashlib
import math
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from helpline.recording.assemble import WAV_HEADER_BYTES, assemble, wav_header
from helpline.recording.audio import interleave
from helpline.recording.peaks import compute_peaks
from helpline.recording.spool import SegmentWriter, read_spool, spool_meta

SEG_FRAMES = 5
SEG_BYTES = SEG_FRAMES * 640


@pytest.fixture
async def writer() -> AsyncIterator[SegmentWriter]:
    w = SegmentWriter()
    yield w
    await asyncio.to_thread(w.close)


def segment(value: int, frames: int = SEG_FRAMES) -> bytes:
    left = np.full(frames * 160, value, dtype="<i2").tobytes()
    right = np.full(frames * 160, -value, dtype="<i2").tobytes()
    return interleave(left, right)


async def test_segments_join_in_order_and_a_missing_one_becomes_a_gap(tmp_path: Path,
                                                                      writer: SegmentWriter) -> None:
    directory = tmp_path / "r1"
    meta = spool_meta("r1", SEG_FRAMES, {"call_id": "c1"})
    parts = {0: segment(100), 1: segment(200), 3: segment(400), 4: segment(500, frames=2)}
    for index, data in parts.items():
        events = [{"op": "pause", "reason": "manual", "frame": 17}] if index == 3 else []
        writer.submit(directory, index, data, events, meta=meta if index == 0 else None)
    await writer.drain(directory)
    assembled = assemble(read_spool(directory), tmp_path / "out.wav")
    with wave.open(str(tmp_path / "out.wav"), "rb") as reader:
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (2, 2, 8000)
        assert reader.getnframes() == 22 * 160
        pcm = reader.readframes(reader.getnframes())
    raw = (tmp_path / "out.wav").read_bytes()
    assert raw[:WAV_HEADER_BYTES] == wav_header(len(pcm)) and raw[WAV_HEADER_BYTES:] == pcm
    assert pcm == parts[0] + parts[1] + bytes(SEG_BYTES) + parts[3] + parts[4]
    assert assembled.frames == 22 and assembled.duration == pytest.approx(0.44)
    assert [(s.index, s.frames) for s in assembled.segments] == [(0, 5), (1, 5), (2, 5), (3, 5), (4, 2)]
    offset = 0
    for seg in assembled.segments:
        size = seg.frames * 640
        assert seg.sha256 == hashlib.sha256(pcm[offset:offset + size]).hexdigest()
        offset += size
    assert assembled.audio_sha256 == hashlib.sha256(pcm).hexdigest()
    assert assembled.overlays == [
        {"kind": "gap", "start": 10, "end": 15},
        {"kind": "pause", "reason": "manual", "start": 17, "end": 22},  # still open: closed at the end
    ]
    assert assembled.meta == {"call_id": "c1"} and not assembled.closed


def test_peaks_are_min_and_max_per_50_ms_per_channel(tmp_path: Path) -> None:
    rate = 8000
    t = np.arange(rate * 2 + 200) / rate  # 2.025 s: a short last bucket
    left = (np.sin(2 * math.pi * 100 * t) * 16000).astype("<i2")
    left[: rate] = 0  # first second silent
    right = np.full(len(t), -32768, dtype="<i2")
    right[-1] = 32767
    pcm = interleave(left.tobytes(), right.tobytes())
    path = tmp_path / "p.wav"
    path.write_bytes(wav_header(len(pcm)) + pcm)
    peaks = compute_peaks(path)
    assert (peaks["rate"], peaks["channels"], peaks["length"]) == (20, 2, 41)
    lane_l, lane_r = peaks["data"]
    assert len(lane_l) == len(lane_r) == 82
    assert lane_l[:40] == [0] * 40  # silence: min 0, max 0
    assert lane_l[40:42] == [-63, 62]  # ±16000 -> top byte
    assert lane_r[:80] == [-128, -128] * 40
    assert lane_r[80:] == [-128, 127]  # the short last bucket
