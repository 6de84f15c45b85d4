"""The recording spool: live recordings on local disk, one directory each, safe against kill -9.

Layout of ``<spool>/<recording_id>/``:

- ``meta.json``: written once, atomically, before the first segment: the recording id, the segment
  length in frames and the service's metadata (``spool_meta``).
- ``seg-NNNNNN.pcm``: segment ``N``, interleaved stereo PCM16 at 8 kHz, ``segment_frames`` frames of
  20 ms (the last one may be shorter). Each is written to ``.tmp``, flushed to disk, then renamed
  and the rename flushed, so a segment file is either whole or absent; ``.tmp`` leftovers mean
  nothing. On Linux one ``syncfs`` flushes a whole batch (every call's segment of that second) where
  an fsync per file and directory would cost two or three flushes per call; elsewhere each file is
  fsynced.
- ``events.jsonl``: control events (pauses, marks, scrubbed spans, the close), one JSON object a
  line, appended and flushed with the segment they belong to. ``overlays_from_events`` turns them
  into the recording's overlays.

Disk work happens on one writer thread shared by every capture (``SegmentWriter``): the event loop
only queues. A failed write is logged with the call id and kept as the directory's error, which the
capture reports as ``failed``; later segments are still attempted (a gap beats losing the rest).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import json
import logging
import os
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

META_FILE = "meta.json"
EVENTS_FILE = "events.jsonl"
SEGMENT_PREFIX = "seg-"
SEGMENT_SUFFIX = ".pcm"
TEMP_SUFFIX = ".tmp"
_BATCH = 64  # jobs taken off the queue at once; directories are fsynced once per batch


def segment_name(index: int) -> str:
    """The file name of segment ``index``."""
    return f"{SEGMENT_PREFIX}{index:06d}{SEGMENT_SUFFIX}"


def spool_meta(recording_id: str, segment_frames: int, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The content of ``meta.json``: what recovery needs besides the service's own metadata."""
    return {"recording_id": recording_id, "segment_frames": segment_frames, "meta": dict(meta)}


class SpoolError(RuntimeError):
    """A spool directory cannot be read back; the message names it and why."""


# ---- events and overlays ----------------------------------------------------------------------------

def overlays_from_events(events: Sequence[Mapping[str, Any]], end_frame: int) -> list[dict[str, Any]]:
    """The overlays described by a recording's events, spans clipped to (and closed at) ``end_frame``.

    Event lines (``op``): ``pause``/``resume`` (``reason``, ``frame``) open and close a pause span of
    that reason; ``span`` (``kind``, ``start``, ``end``) is a finished span; ``mark`` (``kind``,
    ``frame``, ``data``) a point. Overlays: ``{"kind": "pause", "reason", "start", "end"}``,
    ``{"kind", "start", "end"}`` and ``{"kind", "frame", "data"}``, ordered by time.
    """
    overlays: list[dict[str, Any]] = []
    open_pauses: dict[str, int] = {}
    for event in events:
        op = event.get("op")
        if op == "pause":
            open_pauses.setdefault(str(event["reason"]), int(event["frame"]))
        elif op == "resume":
            reason = str(event["reason"])
            start = open_pauses.pop(reason, None)
            if start is not None:
                overlays.append({"kind": "pause", "reason": reason, "start": start,
                                 "end": int(event["frame"])})
        elif op == "span":
            overlays.append({"kind": str(event["kind"]), "start": int(event["start"]),
                             "end": int(event["end"])})
        elif op == "mark":
            overlays.append({"kind": str(event["kind"]), "frame": int(event["frame"]),
                             "data": dict(event.get("data") or {})})
    for reason, start in open_pauses.items():
        overlays.append({"kind": "pause", "reason": reason, "start": start, "end": end_frame})
    kept: list[dict[str, Any]] = []
    for overlay in overlays:
        if "start" in overlay:
            overlay["start"] = min(overlay["start"], end_frame)
            overlay["end"] = min(overlay["end"], end_frame)
            if overlay["end"] <= overlay["start"] and overlay["start"] >= end_frame:
                continue  # entirely past what was kept (lost in a crash)
        elif overlay["frame"] > end_frame:
            continue
        kept.append(overlay)
    kept.sort(key=lambda o: (o.get("start", o.get("frame", 0)), o["kind"]))
    return kept


# ---- the writer -------------------------------------------------------------------------------------

@dataclass(slots=True)
class _Segment:
    directory: Path
    index: int
    data: bytes
    events: Sequence[Mapping[str, Any]]
    meta: Mapping[str, Any] | None


@dataclass(slots=True)
class _Barrier:
    future: concurrent.futures.Future[None] = field(default_factory=concurrent.futures.Future)


_STOP = object()


class SegmentWriter:
    """One thread writing every capture's segments; ``submit`` never blocks the event loop."""

    def __init__(self, name: str = "recording-writer") -> None:
        self._name = name
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._errors: dict[Path, BaseException] = {}
        self._call_ids: dict[Path, str] = {}
        self._created: set[Path] = set()
        self._closed = False

    @property
    def backlog(self) -> int:
        """Segments handed over and not yet written (a disk that cannot keep up shows here first)."""
        return self._queue.qsize()

    def submit(self, directory: Path, index: int, data: bytes,
               events: Sequence[Mapping[str, Any]] = (), *, meta: Mapping[str, Any] | None = None,
               call_id: str | None = None) -> None:
        """Queue segment ``index`` of ``directory`` (and the events that go with it; ``meta`` once,
        with the first segment). The directory is created by the writer."""
        if self._closed:
            raise RuntimeError(f"segment writer closed; segment {index} of {directory} not written")
        if call_id is not None and directory not in self._call_ids:
            with self._lock:
                self._call_ids[directory] = call_id
        self._queue.put(_Segment(directory, index, data, events, meta))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    async def drain(self, directory: Path | None = None) -> None:
        """Wait until everything queued so far (for ``directory`` and before it) is on disk."""
        if self._thread is None:
            return
        barrier = _Barrier()
        self._queue.put(barrier)
        await asyncio.wrap_future(barrier.future)

    def error(self, directory: Path) -> BaseException | None:
        """The first write error of ``directory``, if any."""
        with self._lock:
            return self._errors.get(directory)

    def release(self, directory: Path) -> None:
        """Forget a finished directory's state."""
        with self._lock:
            self._errors.pop(directory, None)
            self._call_ids.pop(directory, None)
            self._created.discard(directory)

    def close(self) -> None:
        """Write what is queued, then stop the thread. Blocks until done: call it from a thread
        (``await asyncio.to_thread(writer.close)``)."""
        self._closed = True
        thread = self._thread
        if thread is None:
            return
        self._queue.put(_STOP)
        thread.join()
        self._thread = None

    # ---- the thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < _BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            segments = [job for job in batch if isinstance(job, _Segment)]
            if segments and _SYNCFS is not None:
                self._write_batch(segments, _SYNCFS)
            elif segments:
                self._write_each(segments)
            for job in batch:
                if isinstance(job, _Barrier):
                    job.future.set_result(None)
            if any(job is _STOP for job in batch):
                return

    def _write_batch(self, segments: Sequence[_Segment], syncfs: Callable[[Path], None]) -> None:
        """Write a batch with two flushes of the whole filesystem (syncfs) instead of two or three
        fsyncs per file: every temp file and event line, one flush, every rename, one more flush. The
        guarantee is the same (a segment file is whole or absent, and durable once its barrier
        resolves); the cost no longer grows with the number of calls."""
        renames: list[tuple[Path, Path, _Segment]] = []
        for job in segments:
            try:
                renames += self._stage(job)
            except Exception as exc:
                self._failed(job.directory, f"segment {job.index}", exc)
        if not renames:
            return
        root = renames[0][1].parent.parent
        try:
            syncfs(root)
            for temp, final, _job in renames:
                os.replace(temp, final)
            syncfs(root)
        except Exception as exc:
            for _temp, _final, job in renames:
                self._failed(job.directory, f"segment {job.index} (flush)", exc)

    def _stage(self, job: _Segment) -> list[tuple[Path, Path, _Segment]]:
        """Write one job's files unflushed: temp files to rename after the flush, events appended."""
        directory = job.directory
        if directory not in self._created:
            directory.mkdir(parents=True, exist_ok=True)
            with self._lock:
                self._created.add(directory)
        staged = []
        if job.meta is not None:
            meta = directory / META_FILE
            staged.append((_write_temp(meta, json.dumps(job.meta, sort_keys=True).encode()), meta, job))
        segment = directory / segment_name(job.index)
        staged.append((_write_temp(segment, job.data), segment, job))
        if job.events:
            with open(directory / EVENTS_FILE, "ab") as file:
                file.write(_event_lines(job.events))
        return staged

    def _write_each(self, segments: Sequence[_Segment]) -> None:
        """Where syncfs is missing: fsync each file, and each directory once per batch."""
        touched: set[Path] = set()
        for job in segments:
            try:
                self._write(job)
            except Exception as exc:
                self._failed(job.directory, f"segment {job.index}", exc)
            touched.add(job.directory)
        for directory in touched:
            if directory in self._created:  # else making it failed, and that error is kept
                try:
                    _fsync_dir(directory)
                except Exception as exc:
                    self._failed(directory, "directory sync", exc)

    def _write(self, job: _Segment) -> None:
        directory = job.directory
        if directory not in self._created:
            directory.mkdir(parents=True, exist_ok=True)
            _fsync_dir(directory.parent)
            with self._lock:
                self._created.add(directory)
        if job.meta is not None:
            _write_atomically(directory / META_FILE, json.dumps(job.meta, sort_keys=True).encode())
        _write_atomically(directory / segment_name(job.index), job.data)
        if job.events:
            with open(directory / EVENTS_FILE, "ab") as file:
                file.write(_event_lines(job.events))
                file.flush()
                os.fsync(file.fileno())

    def _failed(self, directory: Path, what: str, exc: Exception) -> None:
        with self._lock:
            first = directory not in self._errors
            self._errors.setdefault(directory, exc)
            call_id = self._call_ids.get(directory)
        log.error("recording spool write failed (%s in %s): %s", what, directory, exc,
                  exc_info=first, extra={"call_id": call_id})


def _event_lines(events: Sequence[Mapping[str, Any]]) -> bytes:
    return b"".join(json.dumps(event, sort_keys=True, separators=(",", ":")).encode() + b"\n"
                    for event in events)


def _write_temp(path: Path, data: bytes) -> Path:
    """Write ``data`` next to ``path`` under the temp suffix, unflushed; returns the temp path."""
    temp = path.with_name(path.name + TEMP_SUFFIX)
    with open(temp, "wb") as file:
        file.write(data)
    return temp


def _load_syncfs() -> Callable[[Path], None] | None:
    """``syncfs(2)`` (Linux): flush one filesystem. None where the C library lacks it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.syncfs
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int]
    call.restype = ctypes.c_int

    def syncfs(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if call(fd) != 0:
                errno = ctypes.get_errno()
                raise OSError(errno, f"syncfs({path}): {os.strerror(errno)}")
        finally:
            os.close(fd)

    return syncfs


_SYNCFS = _load_syncfs()


def _write_atomically(path: Path, data: bytes) -> None:
    temp = path.with_name(path.name + TEMP_SUFFIX)
    with open(temp, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, path)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- reading back -------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SpooledRecording:
    """One spool directory as found on disk."""

    path: Path  # the recording's spool directory
    recording_id: str
    segment_frames: int
    meta: dict[str, Any]  # the service's metadata, as given to the capture
    segments: dict[int, Path]  # index -> file, in index order
    events: list[dict[str, Any]]
    closed: bool  # the capture finished (its close ran); False after a crash
    torn: bool  # events.jsonl ended in a partial line (the process died while appending)


def read_spool(directory: Path) -> SpooledRecording:
    """Read one spool directory; ``SpoolError`` when its ``meta.json`` is missing or unreadable."""
    try:
        raw = json.loads((directory / META_FILE).read_bytes())
        recording_id = str(raw["recording_id"])
        segment_frames = int(raw["segment_frames"])
        meta = dict(raw.get("meta") or {})
    except FileNotFoundError:
        raise SpoolError(f"{directory}: no {META_FILE}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise SpoolError(f"{directory / META_FILE}: unreadable: {exc}") from exc
    segments: dict[int, Path] = {}
    for path in directory.iterdir():
        name = path.name
        if name.startswith(SEGMENT_PREFIX) and name.endswith(SEGMENT_SUFFIX):
            number = name[len(SEGMENT_PREFIX):-len(SEGMENT_SUFFIX)]
            if number.isdigit():
                segments[int(number)] = path
    events, torn = _read_events(directory / EVENTS_FILE)
    return SpooledRecording(
        path=directory, recording_id=recording_id, segment_frames=segment_frames, meta=meta,
        segments=dict(sorted(segments.items())), events=events,
        closed=any(event.get("op") == "closed" for event in events), torn=torn,
    )


def _read_events(path: Path) -> tuple[list[dict[str, Any]], bool]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], False
    lines = data.split(b"\n")
    torn = lines[-1] != b""  # the last append did not finish its line
    events: list[dict[str, Any]] = []
    for number, line in enumerate(lines[:-1] if not torn else lines, start=1):
        if not line:
            continue
        try:
            event = json.loads(line)
        except ValueError as exc:
            if number == len(lines):
                break  # the torn last line
            log.error("%s:%d: bad event line skipped: %s", path, number, exc)
            continue
        if isinstance(event, dict):
            events.append(event)
        else:
            log.error("%s:%d: event line is not an object, skipped", path, number)
    if torn:
        log.warning("%s: partial last line ignored (the recorder stopped while writing it)", path)
    return events, torn


def recover(spool_root: Path) -> list[SpooledRecording]:
    """Every unfinished recording under ``spool_root`` (each directory holding a ``meta.json``).

    A directory without ``meta.json`` never got its first segment written and holds no audio; one
    whose metadata cannot be read is logged and left in place for a person to look at.
    """
    if not spool_root.is_dir():
        return []
    found: list[SpooledRecording] = []
    for directory in sorted(p for p in spool_root.iterdir() if p.is_dir()):
        if not (directory / META_FILE).exists():
            continue
        try:
            found.append(read_spool(directory))
        except SpoolError as exc:
            log.error("recording spool not recoverable: %s", exc)
    return found
