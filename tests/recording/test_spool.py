"""The segment writer and spool recovery on a real disk: atomic segments, fsynced event lines, one
meta.json, errors kept and logged with the call id, and leftovers of a crash tolerated."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from helpline.recording import spool
from helpline.recording.spool import SegmentWriter, overlays_from_events, read_spool, recover, spool_meta


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as file:
        file.write(data)


@pytest.fixture(params=["syncfs", "fsync"], autouse=True)
def flush_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every spool test runs with both ways of flushing: one syncfs per batch (Linux) and the fsync
    per file used where syncfs is missing."""
    if request.param == "fsync":
        monkeypatch.setattr(spool, "_SYNCFS", None)
    else:
        assert spool._SYNCFS is not None, "syncfs(2) should exist on Linux"
    return str(request.param)


@pytest.fixture
async def writer() -> AsyncIterator[SegmentWriter]:
    w = SegmentWriter()
    yield w
    await asyncio.to_thread(w.close)


async def test_segments_events_and_meta_land_on_disk(tmp_path: Path, writer: SegmentWriter) -> None:
    directory = tmp_path / "spool" / "r1"
    meta = spool_meta("r1", 2, {"call_id": "c1", "caller": "+15550001"})
    writer.submit(directory, 0, b"\x01" * 1280, [{"op": "mark", "kind": "gate", "frame": 0, "data": {}}],
                  meta=meta, call_id="c1")
    writer.submit(directory, 1, b"\x02" * 1280, [])
    writer.submit(directory, 2, b"\x03" * 640, [{"op": "closed", "frame": 5}])
    await writer.drain(directory)
    assert writer.error(directory) is None
    assert sorted(p.name for p in directory.iterdir()) == [
        "events.jsonl", "meta.json", "seg-000000.pcm", "seg-000001.pcm", "seg-000002.pcm"]
    assert json.loads((directory / "meta.json").read_text()) == meta
    spooled = read_spool(directory)
    assert spooled.recording_id == "r1" and spooled.segment_frames == 2
    assert spooled.meta == {"call_id": "c1", "caller": "+15550001"}
    assert [p.read_bytes()[:1] for p in spooled.segments.values()] == [b"\x01", b"\x02", b"\x03"]
    assert spooled.events == [{"op": "mark", "kind": "gate", "frame": 0, "data": {}},
                              {"op": "closed", "frame": 5}]
    assert spooled.closed and not spooled.torn


async def test_a_write_error_is_kept_and_logged_with_the_call_id(tmp_path: Path, writer: SegmentWriter,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "spool"
    blocker.write_text("a file where the spool directory should be")
    directory = blocker / "r2"
    with caplog.at_level(logging.ERROR, logger="helpline.recording.spool"):
        writer.submit(directory, 0, b"\0" * 640, [], meta=spool_meta("r2", 1, {}), call_id="call-42")
        await writer.drain(directory)
    error = writer.error(directory)
    assert isinstance(error, OSError)
    records = [r for r in caplog.records if "spool write failed" in r.getMessage()]
    assert records and getattr(records[0], "call_id", None) == "call-42"
    # other recordings are unaffected
    fine = tmp_path / "other" / "r3"
    writer.submit(fine, 0, b"\0" * 640, [], meta=spool_meta("r3", 1, {}))
    await writer.drain(fine)
    assert writer.error(fine) is None and (fine / "seg-000000.pcm").exists()


async def test_recover_tolerates_what_a_crash_leaves(tmp_path: Path, writer: SegmentWriter) -> None:
    root = tmp_path / "spool"
    directory = root / "r4"
    writer.submit(directory, 0, b"\x05" * 640, [{"op": "pause", "reason": "manual", "frame": 0}],
                  meta=spool_meta("r4", 1, {"call_id": "c4"}))
    await writer.drain(directory)
    (directory / "seg-000001.pcm.tmp").write_bytes(b"\x06" * 100)  # died while writing segment 1
    append(directory / "events.jsonl", b'{"op":"resume","rea')  # and while appending an event
    (root / "no-meta").mkdir()  # died before the first segment
    (root / "no-meta" / "seg-000000.pcm.tmp").write_bytes(b"\0" * 10)
    found = recover(root)
    assert [s.recording_id for s in found] == ["r4"]
    spooled = found[0]
    assert list(spooled.segments) == [0]
    assert spooled.events == [{"op": "pause", "reason": "manual", "frame": 0}]
    assert spooled.torn and not spooled.closed
    assert recover(tmp_path / "missing") == []


def test_overlays_close_open_spans_and_drop_what_was_lost() -> None:
    events = [
        {"op": "mark", "kind": "gate", "frame": 0, "data": {"caller": True, "agent": True}},
        {"op": "pause", "reason": "sensitive", "frame": 10},
        {"op": "pause", "reason": "manual", "frame": 12},
        {"op": "resume", "reason": "sensitive", "frame": 20},
        {"op": "span", "kind": "dtmf", "start": 30, "end": 36},
        {"op": "mark", "kind": "transfer", "frame": 90, "data": {"to": "agent 2"}},  # lost in a crash
        {"op": "closed", "frame": 95},
    ]
    assert overlays_from_events(events, 50) == [
        {"kind": "gate", "frame": 0, "data": {"caller": True, "agent": True}},
        {"kind": "pause", "reason": "sensitive", "start": 10, "end": 20},
        {"kind": "pause", "reason": "manual", "start": 12, "end": 50},
        {"kind": "dtmf", "start": 30, "end": 36},
    ]
