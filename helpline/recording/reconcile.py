"""Proof of recording (R-M3): reconcile the calls that were recorded against the recordings kept.

A call is in scope when its event log says ``recording.started``: from then on the service owes a
sealed recording. For each such call this module checks that the recording exists (``missing``), that
nothing was lost on the way (``failed``), that it covers the call (``short``: recording length against
the wall time from ``recording.started`` to the call's end, less the time recording was stopped; pauses
write silence and keep the timeline, so they count), that both sides were heard (``one_sided``), and
that the stored files still verify (``unverified``). A stored recording whose audio cannot be opened is
``unreadable``. Each finding names the call, the recording and the numbers behind it, so an alert can
be acted on without re-running anything.

Calls are read a page at a time through the CDR cursor and audio a minute at a time, so a day of calls
or an hour-long recording never has to fit in memory; decoding and the energy maths run in threads.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from helpline.recording.library import AudioSource, LibraryError, RecordingLibrary
from helpline.recording.manifest import WavLayout, wav_layout
from helpline.store import Store
from helpline.store.recordings import RecordingRow
from helpline.store.records import CallDetail, CallEventRecord
from helpline.store.repository import CallFilters

log = logging.getLogger(__name__)

CALL_PAGE = 200
FRAMES_PER_SECOND = 50  # the recording timeline's 20 ms frames
WINDOW_FRAMES = FRAMES_PER_SECOND  # energy is judged per 1 s window
MIN_WINDOW_FRAMES = WINDOW_FRAMES // 2  # a window mostly excluded (a pause edge) is not judged
CHUNK_FRAMES = 60 * FRAMES_PER_SECOND  # audio read a minute at a time
HEAD_BYTES = 64 * 1024  # where the WAV's fmt and data chunks must start
FULL_SCALE_SQ = 32768.0**2
SEALED = ("stored", "recovered")
GONE = ("deleted", "erased")
NOT_STORED = ("recording", "empty")
EXCLUDED_SPANS = ("pause", "gap")  # written as silence on purpose (or lost and reported as a gap)
CODES = ("missing", "failed", "short", "one_sided", "unverified", "unreadable")


@dataclass(frozen=True, slots=True)
class Finding:
    """One reason a recorded call is not fully proven; ``numbers`` hold what the check measured."""

    call_id: str
    recording_id: str | None
    code: str
    message: str
    numbers: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "recording_id": self.recording_id, "code": self.code,
                "message": self.message, **self.numbers}


@dataclass(slots=True)
class ReconcileReport:
    """What one reconciliation run over ``[since, until)`` (call start times) found.

    ``calls``: CDRs in the window; ``in_scope``: those whose log says ``recording.started``;
    ``recordings``: recordings those calls owe (started, or with a row); ``ok``: recordings with no
    finding; ``deleted``: lawfully deleted ones (their receipt stands for them); ``unsettled``: calls
    still running or ended too recently for sealing to have finished (not judged)."""

    since: datetime
    until: datetime
    calls: int = 0
    in_scope: int = 0
    unsettled: int = 0
    recordings: int = 0
    ok: int = 0
    deleted: int = 0
    findings: list[Finding] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(CODES, 0)
        for finding in self.findings:
            counts[finding.code] = counts.get(finding.code, 0) + 1
        return counts

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(), "until": self.until.isoformat(), "calls": self.calls,
            "in_scope": self.in_scope, "unsettled": self.unsettled, "recordings": self.recordings,
            "ok": self.ok, "deleted": self.deleted, "counts": self.counts(),
            "findings": [f.as_dict() for f in self.findings],
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Thresholds:
    short_tolerance: float
    silent_share: float
    energy_floor_dbfs: float


async def reconcile(
    store: Store,
    library: RecordingLibrary,
    *,
    since: datetime,
    until: datetime,
    short_tolerance: float = 0.05,
    silent_share: float = 0.9,
    energy_floor_dbfs: float = -50.0,
    settle: timedelta = timedelta(minutes=5),
) -> ReconcileReport:
    """Check every recorded call that started in ``[since, until)``.

    ``settle``: a call that has not ended, or ended less than this long ago, is counted as
    ``unsettled`` and not judged (its recording may still be being sealed)."""
    if not 0 <= short_tolerance < 1:
        raise ValueError("short_tolerance must be within 0..1")
    if not 0 < silent_share <= 1:
        raise ValueError("silent_share must be within 0..1 (excluding 0)")
    limits = _Thresholds(short_tolerance, silent_share, energy_floor_dbfs)
    settled_before = datetime.now(UTC) - settle
    report = ReconcileReport(since=since, until=until)
    cursor: str | None = None
    while True:
        page = await store.calls.list_calls(CallFilters(since=since, until=until), limit=CALL_PAGE,
                                            cursor=cursor)
        for call in page.items:
            report.calls += 1
            if call.answered_at is None:
                continue  # never answered: nothing could have been recorded
            detail = await store.calls.get_call(call.id)
            if detail is None or not any(e.type == "recording.started" for e in detail.events):
                continue
            report.in_scope += 1
            if detail.ended_at is None or detail.ended_at > settled_before:
                report.unsettled += 1
                continue
            await _reconcile_call(store, library, detail, limits, report)
        cursor = page.next_cursor
        if cursor is None:
            return report


async def _reconcile_call(store: Store, library: RecordingLibrary, call: CallDetail, limits: _Thresholds,
                          report: ReconcileReport) -> None:
    rows = {row.id: row for row in await store.recordings.for_call(call.id)}
    timeline = _timelines(call.id, call.events, call.ended_at or call.started_at)
    failures: dict[str | None, list[CallEventRecord]] = {}
    for event in call.events:
        if event.type == "recording.failed":
            failures.setdefault(_text(event.data.get("recording_id")), []).append(event)
    recording_ids = list(dict.fromkeys([*timeline, *rows]))
    for stray in failures.keys() - set(recording_ids):
        for event in failures[stray]:
            report.findings.append(_failed(call.id, stray, event))
    for recording_id in recording_ids:
        report.recordings += 1
        row = rows.get(recording_id)
        findings = [_failed(call.id, recording_id, e) for e in failures.get(recording_id, [])]
        if row is not None and row.status in GONE:
            report.deleted += 1
            report.findings += findings
            continue
        if row is None or row.status not in SEALED:
            status = "absent" if row is None else row.status
            findings.append(Finding(call.id, recording_id, "missing",
                                    f"recording started but never stored (row {status})",
                                    {"status": status}))
        else:
            expected = timeline.get(recording_id)
            if expected is not None:
                findings += _short(call.id, row, expected, limits.short_tolerance)
            findings += await _integrity(library, call.id, row)
            findings += await _one_sided(library, call.id, row, limits)
        if findings:
            report.findings += findings
        else:
            report.ok += 1


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _failed(call_id: str, recording_id: str | None, event: CallEventRecord) -> Finding:
    stage = _text(event.data.get("stage")) or "unknown"
    error = _text(event.data.get("error"))
    message = f"recording failed while it was being {'written' if stage == 'write' else 'sealed'}"
    return Finding(call_id, recording_id, "failed", message + (f": {error}" if error else ""),
                   {"stage": stage, "at": event.at.isoformat()})


def _timelines(call_id: str, events: Sequence[CallEventRecord], call_end: datetime) -> dict[str, float]:
    """Per recording id, the seconds of the call it should cover: from its first ``recording.started``
    to the call's end, less the time between a ``recording.stopped`` and the next start (while stopped
    the capture is detached and its timeline does not advance)."""
    started: dict[str, datetime] = {}
    stopped_s: dict[str, float] = {}
    current: str | None = None
    stopped_at: datetime | None = None
    for event in events:
        if event.type == "recording.started":
            recording_id = _text(event.data.get("recording_id"))
            if recording_id is None:
                log.warning("call %s: recording.started (event %d) names no recording", call_id, event.seq)
                continue
            started.setdefault(recording_id, event.at)
            if stopped_at is not None and current is not None:
                stopped_s[current] = stopped_s.get(current, 0.0) + (event.at - stopped_at).total_seconds()
            current, stopped_at = recording_id, None
        elif event.type == "recording.stopped" and current is not None and stopped_at is None:
            stopped_at = event.at
    if stopped_at is not None and current is not None:
        stopped_s[current] = stopped_s.get(current, 0.0) + (call_end - stopped_at).total_seconds()
    return {rid: max(0.0, (call_end - at).total_seconds() - stopped_s.get(rid, 0.0))
            for rid, at in started.items()}


def _short(call_id: str, row: RecordingRow, expected_s: float, tolerance: float) -> list[Finding]:
    duration = row.duration_s or 0.0
    if expected_s <= 0 or duration >= expected_s * (1 - tolerance):
        return []
    shortfall = 1 - duration / expected_s
    what = "zero-length" if duration == 0 else f"{shortfall:.0%} shorter than the call"
    return [Finding(call_id, row.id, "short",
                    f"recording is {what} ({duration:.2f} s of {expected_s:.2f} s expected)",
                    {"duration_s": round(duration, 3), "expected_s": round(expected_s, 3),
                     "shortfall": round(shortfall, 4)})]


async def _integrity(library: RecordingLibrary, call_id: str, row: RecordingRow) -> list[Finding]:
    try:
        verdict = await library.integrity(row.id)
    except LibraryError as exc:
        return [Finding(call_id, row.id, "unreadable", f"integrity could not be checked: {exc.message}")]
    except Exception as exc:  # one broken recording must not stop the run: it becomes a finding
        log.error("recording %s: integrity check failed with an error", row.id, exc_info=True)
        return [Finding(call_id, row.id, "unreadable", f"integrity could not be checked: {exc}")]
    if verdict.status == "verified":
        return []
    problems = verdict.report.get("problems") or []
    codes = sorted({str(p.get("code")) for p in problems if isinstance(p, Mapping)})
    notes = [str(n) for n in verdict.report.get("notes") or []]
    detail = ", ".join(codes) or "; ".join(notes) or "no detail"
    return [Finding(call_id, row.id, "unverified", f"integrity {verdict.status}: {detail}",
                    {"integrity": verdict.status, "problems": codes, "notes": notes})]


# ---- one-sided ----------------------------------------------------------------------------------------
async def _one_sided(library: RecordingLibrary, call_id: str, row: RecordingRow,
                     limits: _Thresholds) -> list[Finding]:
    try:
        source = await library.open_audio(row.id)
    except LibraryError as exc:
        return [Finding(call_id, row.id, "unreadable", f"audio could not be opened: {exc.message}")]
    try:
        energy = await _frame_energy(source)
    except Exception as exc:  # a bad header, an unreadable file, a failed decryption: a finding
        log.error("recording %s: audio could not be analysed", row.id, exc_info=True)
        return [Finding(call_id, row.id, "unreadable", f"audio could not be analysed: {exc}")]
    finally:
        await source.aclose()
    included = _analysed_frames(row.overlays, len(energy.squares))
    shares = await asyncio.to_thread(_silent_shares, energy, included, limits.energy_floor_dbfs)
    if shares is None:
        return []
    windows, silent = shares
    roles = {int(c.get("channel", i)): str(c.get("role", f"channel {i}")) for i, c in enumerate(row.channels)}
    findings = []
    answered = any(o.get("kind") == "agent" for o in row.overlays)
    for channel, share in enumerate(silent):
        role = roles.get(channel, f"channel {channel}")
        if role == "caller" and row.consent_outcome not in (None, "granted"):
            continue  # the caller declined: an agent-only recording is silent on their side by design
        if role == "agent" and not answered:
            continue  # no agent ever answered: that side is the IVR, silent whenever it waits
        if share > limits.silent_share:
            findings.append(Finding(
                call_id, row.id, "one_sided",
                f"channel {channel} ({role}) is below {limits.energy_floor_dbfs:g} dBFS in {share:.0%} "
                f"of {windows} one-second windows",
                {"channel": channel, "role": role, "silent_share": round(share, 4), "windows": windows,
                 "energy_floor_dbfs": limits.energy_floor_dbfs}))  # fmt: skip
    return findings


@dataclass(frozen=True, slots=True)
class _Energy:
    """Sum of squared samples per 20 ms frame (rows) and channel (columns)."""

    squares: npt.NDArray[np.float64]
    samples_per_frame: int


class _Head:
    """The first bytes of a WAV as the ``ByteSource`` ``wav_layout`` walks (its size is the file's)."""

    def __init__(self, head: bytes, size: int) -> None:
        self._head = head
        self.size = size

    def read(self, offset: int, length: int) -> bytes:
        if offset + length > len(self._head):
            raise ValueError(f"the WAV's chunks do not start within its first {len(self._head)} bytes")
        return self._head[offset : offset + length]


async def _frame_energy(source: AudioSource) -> _Energy:
    layout: WavLayout = wav_layout(_Head(await source.read(0, min(source.size, HEAD_BYTES)), source.size))
    if layout.bits != 16 or layout.rate % FRAMES_PER_SECOND:
        raise ValueError(f"need 16-bit PCM at a multiple of 50 Hz, not {layout.bits}-bit {layout.rate} Hz")
    per_frame = layout.rate // FRAMES_PER_SECOND
    frame_bytes = per_frame * layout.channels * 2
    chunk = CHUNK_FRAMES * frame_bytes
    parts: list[npt.NDArray[np.float64]] = []
    for offset in range(0, layout.data_size, chunk):
        raw = await source.read(layout.data_offset + offset, min(chunk, layout.data_size - offset))
        parts.append(await asyncio.to_thread(_squares, raw, layout.channels, per_frame))
    squares = np.concatenate(parts) if parts else np.zeros((0, layout.channels))
    return _Energy(squares, per_frame)


def _squares(raw: bytes, channels: int, per_frame: int) -> npt.NDArray[np.float64]:
    """Per frame and channel, the sum of squared samples; a short last frame is padded with zeros."""
    samples = np.frombuffer(raw[: len(raw) - len(raw) % (2 * channels)], dtype="<i2").reshape(-1, channels)
    frames = -(-len(samples) // per_frame)
    padded = np.zeros((frames * per_frame, channels), dtype=np.float64)
    padded[: len(samples)] = samples
    return np.asarray((padded.reshape(frames, per_frame, channels) ** 2).sum(axis=1), dtype=np.float64)


def _analysed_frames(overlays: Sequence[Mapping[str, Any]], frames: int) -> npt.NDArray[np.bool_]:
    """The frames where both sides are expected to carry audio: after an agent answered (before it,
    the caller listens to the IVR or the queue, one-sided by nature), outside pauses and gaps (silence
    written on purpose, or lost and reported), and before consent was withdrawn."""
    included = np.ones(frames, dtype=np.bool_)
    agent_frames = [int(o["frame"]) for o in overlays if o.get("kind") == "agent" and "frame" in o]
    if agent_frames:
        included[: min(agent_frames)] = False
    for overlay in overlays:
        kind = overlay.get("kind")
        if kind in EXCLUDED_SPANS and "start" in overlay:
            end = overlay.get("end")
            included[int(overlay["start"]) : frames if end is None else int(end)] = False
        elif kind == "consent_withdrawn" and "frame" in overlay:
            included[int(overlay["frame"]) :] = False
    return included


def _silent_shares(energy: _Energy, included: npt.NDArray[np.bool_], floor_dbfs: float
                   ) -> tuple[int, list[float]] | None:
    """(windows judged, per channel the share of them below ``floor_dbfs``); None when none was."""
    frames, channels = energy.squares.shape
    windows = -(-frames // WINDOW_FRAMES)
    pad = windows * WINDOW_FRAMES - frames
    squares = np.where(included[:, None], energy.squares, 0.0)
    squares = np.pad(squares, ((0, pad), (0, 0))).reshape(windows, WINDOW_FRAMES, channels).sum(axis=1)
    counts = np.pad(included, (0, pad)).reshape(windows, WINDOW_FRAMES).sum(axis=1)
    judged = counts >= MIN_WINDOW_FRAMES
    if not judged.any():
        return None
    mean_sq = squares[judged] / (counts[judged, None] * energy.samples_per_frame)
    floor = FULL_SCALE_SQ * math.pow(10.0, floor_dbfs / 10.0)  # compare powers, no log of zero
    silent = (mean_sq < floor).mean(axis=0)
    return int(judged.sum()), [float(s) for s in silent]
