"""Capture end to end on a real disk: frames in, spool written by the writer thread, recovered and
assembled into a WAV that the stdlib ``wave`` module reads back; tones checked per channel, gates and
pauses as zeros, DTMF scrubbed, and a recorder killed with SIGKILL losing at most 2 s."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import sys
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpline.recording.assemble import assemble
from helpline.recording.audio import DtmfScrubber, channels, dtmf_tone, find_dtmf
from helpline.recording.capture import Capture
from helpline.recording.spool import SegmentWriter, recover
from helpline.voice.tones import dominant_tone
from tests.recording.audio_support import speech_like

RATE = 8000
FRAME = 320  # bytes of one 20 ms mono PCM16 frame
CANDIDATES = [440.0, 1000.0, 697.0, 1209.0]
REPO = Path(__file__).resolve().parents[2]


def sine(freq: float, seconds: float, dbfs: float = -12.0) -> bytes:
    t = np.arange(round(seconds * RATE)) / RATE
    return (np.sin(2 * math.pi * freq * t) * 32768 * 10 ** (dbfs / 20)).astype("<i2").tobytes()


def feed(capture: Capture, left: bytes, right: bytes) -> int:
    count = len(left) // FRAME
    for i in range(count):
        capture.frame(left[i * FRAME:(i + 1) * FRAME], right[i * FRAME:(i + 1) * FRAME])
    return count


def read_wav(path: Path) -> tuple[int, int, bytes, bytes]:
    with wave.open(str(path), "rb") as reader:
        assert reader.getsampwidth() == 2
        frames = reader.getnframes()
        left, right = channels(reader.readframes(frames))
        return reader.getnchannels(), reader.getframerate(), left, right


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, "<i2")


@pytest.fixture
async def writer() -> AsyncIterator[SegmentWriter]:
    w = SegmentWriter()
    yield w
    await asyncio.to_thread(w.close)


async def record_and_assemble(capture: Capture, root: Path, out: Path) -> tuple[bytes, bytes, list[Any]]:
    await capture.close()
    assert not capture.failed
    found = recover(root)
    assert [s.recording_id for s in found] == [capture.recording_id]
    assembled = await asyncio.to_thread(assemble, found[0], out)
    n_channels, rate, left, right = read_wav(out)
    assert (n_channels, rate) == (2, RATE)
    assert len(left) // 2 == assembled.frames * 160 == capture.frames * 160
    return left, right, assembled.overlays


async def test_each_channel_holds_its_own_tone_and_the_length_is_the_ticks(tmp_path: Path,
                                                                          writer: SegmentWriter) -> None:
    root = tmp_path / "spool"
    capture = Capture("rec1", root / "rec1", writer, meta={"call_id": "c1"}, segment_frames=50)
    capture.allow(caller=True, agent=True)
    count = feed(capture, sine(440, 3.3), sine(1000, 3.3))
    assert capture.frames == count == 165
    left, right, overlays = await record_and_assemble(capture, root, tmp_path / "out.wav")
    assert len(left) == len(sine(440, 3.3))
    for second in range(3):
        window = slice(second * 2 * RATE, (second + 1) * 2 * RATE)
        assert dominant_tone(left[window], RATE, CANDIDATES, 0.9) == 440.0
        assert dominant_tone(right[window], RATE, CANDIDATES, 0.9) == 1000.0
    assert left == sine(440, 3.3)  # untouched, sample for sample
    assert overlays == [{"kind": "gate", "frame": 0, "data": {"caller": True, "agent": True}}]
    assert sorted(p.name for p in (root / "rec1").iterdir())[:4] == [
        "events.jsonl", "meta.json", "seg-000000.pcm", "seg-000001.pcm"]


async def test_pauses_write_zeros_and_spans_and_nest_per_reason(tmp_path: Path,
                                                                 writer: SegmentWriter) -> None:
    root = tmp_path / "spool"
    capture = Capture("rec2", root / "rec2", writer, meta={"call_id": "c2"}, segment_frames=20)
    capture.allow(caller=True, agent=True)
    tone_l, tone_r = sine(440, 0.2), sine(1000, 0.2)  # 10 frames
    feed(capture, tone_l, tone_r)  # frames 0-9
    capture.pause("sensitive")
    feed(capture, tone_l, tone_r)  # 10-19
    capture.pause("sensitive")  # nested: needs two resumes
    capture.pause("manual")
    capture.resume("sensitive")
    feed(capture, tone_l, tone_r)  # 20-29, still paused
    capture.resume("sensitive")
    feed(capture, tone_l, tone_r)  # 30-39, manual still open
    capture.resume("manual")
    capture.mark("hold", {"by": "agent"})
    feed(capture, tone_l, tone_r)  # 40-49
    capture.pause("withdrawn")
    feed(capture, tone_l, tone_r)  # 50-59, open at the end
    left, right, overlays = await record_and_assemble(capture, root, tmp_path / "out.wav")
    frames_l = samples(left).reshape(-1, 160)
    frames_r = samples(right).reshape(-1, 160)
    audible = [bool(frames_l[i].any() or frames_r[i].any()) for i in range(60)]
    assert audible == [True] * 10 + [False] * 30 + [True] * 10 + [False] * 10
    assert overlays == [
        {"kind": "gate", "frame": 0, "data": {"caller": True, "agent": True}},
        {"kind": "pause", "reason": "sensitive", "start": 10, "end": 30},
        {"kind": "pause", "reason": "manual", "start": 20, "end": 40},
        {"kind": "hold", "frame": 40, "data": {"by": "agent"}},
        {"kind": "pause", "reason": "withdrawn", "start": 50, "end": 60},
    ]
    with pytest.raises(ValueError, match="unknown pause reason"):
        capture.pause("lunch")


async def test_a_channel_without_consent_is_zeros(tmp_path: Path, writer: SegmentWriter) -> None:
    root = tmp_path / "spool"
    capture = Capture("rec3", root / "rec3", writer, meta={"call_id": "c3"})
    capture.allow(caller=False, agent=True)  # declined, agent_only
    feed(capture, sine(440, 1.5), sine(1000, 1.5))
    capture.allow(caller=True, agent=True)  # granted later
    feed(capture, sine(440, 1.0), sine(1000, 1.0))
    left, right, overlays = await record_and_assemble(capture, root, tmp_path / "out.wav")
    split = 75 * FRAME
    assert not samples(left[:split]).any()
    assert right[:split] == sine(1000, 1.5)
    assert left[split:] == sine(440, 1.0)
    assert [o["data"] for o in overlays if o["kind"] == "gate"] == [
        {"caller": False, "agent": True}, {"caller": True, "agent": True}]


async def test_nothing_allowed_ever_leaves_no_file_at_all(tmp_path: Path, writer: SegmentWriter) -> None:
    root = tmp_path / "spool"
    root.mkdir()
    capture = Capture("rec4", root / "rec4", writer, meta={"call_id": "c4"}, segment_frames=10)
    capture.allow(caller=False, agent=False)
    capture.pause("sensitive")
    capture.mark("consent", {"outcome": "denied"})
    feed(capture, sine(440, 2.0), sine(1000, 2.0))
    await capture.close()
    await writer.drain()
    assert not capture.recorded
    assert list(root.iterdir()) == []
    assert recover(root) == []


async def test_consent_given_late_keeps_the_timeline_from_the_start(tmp_path: Path,
                                                                   writer: SegmentWriter) -> None:
    root = tmp_path / "spool"
    capture = Capture("rec5", root / "rec5", writer, meta={"call_id": "c5"}, segment_frames=10)
    feed(capture, sine(440, 0.5), sine(1000, 0.5))  # 25 frames before anything is allowed
    assert not (root / "rec5").exists()
    capture.allow(caller=True, agent=True)
    feed(capture, sine(440, 0.5), sine(1000, 0.5))
    left, _right, overlays = await record_and_assemble(capture, root, tmp_path / "out.wav")
    assert not samples(left[:25 * FRAME]).any()
    assert left[25 * FRAME:] == sine(440, 0.5)
    assert overlays[0] == {"kind": "gate", "frame": 25, "data": {"caller": True, "agent": True}}


async def test_dtmf_in_speech_is_scrubbed_before_it_is_stored(tmp_path: Path, writer: SegmentWriter) -> None:
    root = tmp_path / "spool"
    capture = Capture("rec6", root / "rec6", writer, meta={"call_id": "c6"}, segment_frames=50)
    capture.allow(caller=True, agent=True)
    speech = bytearray(speech_like(8.0, seed=3, rms_dbfs=-20.0))
    digits = "4111#7"
    for i, digit in enumerate(digits):
        start = 2 * round((0.7 + 1.1 * i + 0.007 * i) * RATE)  # off the frame grid, some across segments
        tone = dtmf_tone(digit, 0.09)
        mixed = samples(bytes(speech[start:start + len(tone)])).astype(np.int32) + samples(tone)
        speech[start:start + len(tone)] = np.clip(mixed, -32768, 32767).astype("<i2").tobytes()
    heard = speech_like(8.0, seed=4, rms_dbfs=-22.0)
    assert [d for _, d in find_dtmf(bytes(speech))] == list(digits)  # the input holds them
    feed(capture, bytes(speech), heard)
    left, right, overlays = await record_and_assemble(capture, root, tmp_path / "out.wav")
    assert find_dtmf(left) == []
    assert find_dtmf(right) == []
    scrubber = DtmfScrubber()
    assert not any(scrubber.scan(left[i:i + FRAME]) for i in range(0, len(left), FRAME))
    spans = [o for o in overlays if o["kind"] == "dtmf"]
    assert len(spans) == len(digits)
    blanked = sum(o["end"] - o["start"] for o in spans)
    assert blanked <= len(digits) * 8  # 90 ms tones: ~5-6 frames and one either side
    # outside the spans nothing was touched
    keep = np.ones(len(left) // FRAME, dtype=bool)
    for o in spans:
        keep[o["start"]:o["end"]] = False
    assert np.array_equal(samples(left).reshape(-1, 160)[keep], samples(bytes(speech)).reshape(-1, 160)[keep])
    assert np.array_equal(samples(right).reshape(-1, 160)[keep], samples(heard).reshape(-1, 160)[keep])


async def test_an_out_of_band_digit_blanks_the_frames_around_it(tmp_path: Path,
                                                                 writer: SegmentWriter) -> None:
    root = tmp_path / "spool"
    capture = Capture("rec7", root / "rec7", writer, meta={"call_id": "c7"}, segment_frames=5)
    capture.allow(caller=True, agent=True)
    tone = sine(440, 0.2)
    feed(capture, tone, tone)  # frames 0-9
    capture.dtmf()  # reported after frame 9
    feed(capture, tone, tone)
    left, _right, overlays = await record_and_assemble(capture, root, tmp_path / "out.wav")
    audible = [bool(f.any()) for f in samples(left).reshape(-1, 160)]
    assert audible == [True] * 9 + [False, False] + [True] * 9
    assert {"kind": "dtmf", "start": 9, "end": 11} in overlays


CRASH_SCRIPT = """
import asyncio, math, sys
from pathlib import Path
import numpy as np
from helpline.recording.capture import Capture
from helpline.recording.spool import SegmentWriter

async def main() -> None:
    writer = SegmentWriter()
    capture = Capture("crash", Path(sys.argv[1]) / "crash", writer, meta={"call_id": "crash"})
    capture.allow(caller=True, agent=True)
    t = np.arange(160) / 8000
    left = (np.sin(2 * math.pi * 400 * t) * 8000).astype("<i2").tobytes()  # 400 Hz: 8 cycles a frame
    right = (np.sin(2 * math.pi * 1000 * t) * 8000).astype("<i2").tobytes()
    loop = asyncio.get_running_loop()
    start = loop.time()
    n = 0
    while True:
        n += 1
        capture.frame(left, right)
        print(n, flush=True)
        await asyncio.sleep(max(0.0, start + n * 0.02 - loop.time()))

asyncio.run(main())
"""


async def test_a_killed_recorder_loses_at_most_two_seconds(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    script = tmp_path / "recorder.py"
    script.write_text(CRASH_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(sys.executable, str(script), str(root),
                                                stdout=asyncio.subprocess.PIPE, env=env, cwd=REPO)
    assert proc.stdout is not None
    fed = 0
    try:
        async with asyncio.timeout(30):
            while fed < 260:  # 5.2 s of audio
                line = await proc.stdout.readline()
                assert line, "the recorder died by itself"
                fed = int(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        rest = await asyncio.wait_for(proc.stdout.read(), 10)
        await asyncio.wait_for(proc.wait(), 10)
    fed = max([fed, *(int(x) for x in rest.split())])
    assert proc.returncode == -signal.SIGKILL
    found = recover(root)
    assert len(found) == 1 and not found[0].closed
    assembled = await asyncio.to_thread(assemble, found[0], tmp_path / "out.wav")
    n_channels, rate, left, right = read_wav(tmp_path / "out.wav")
    assert (n_channels, rate) == (2, RATE)
    assert len(left) // FRAME == assembled.frames
    assert fed - 100 <= assembled.frames <= fed  # at most 2 s lost
    assert assembled.frames >= 200
    assert dominant_tone(left, RATE, [400.0, 1000.0], 0.9) == 400.0
    assert dominant_tone(right, RATE, [400.0, 1000.0], 0.9) == 1000.0
    assert [o for o in assembled.overlays if o["kind"] == "gap"] == []
