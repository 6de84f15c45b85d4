"""One call's live recording: the consent gate, pauses, DTMF scrubbing and 1 s segments.

``frame`` runs on the event loop once per 20 ms tick for every recorded call, so it only appends the
two channels' frames to two buffers (zeros for a channel that may not be recorded, whose samples are
never copied). Once a segment's worth is buffered (plus one frame held back), the segment is scrubbed
of DTMF with numpy in one go, interleaved and handed to the shared ``SegmentWriter``: about a tenth of
a millisecond per call and second, and no disk access on the loop.

DTMF: a frame in which either channel holds a keypad tone pair, and the frame on either side of it,
become silence on both channels. The frame held back at each cut is what lets the frame *after* a
detection be known before the segment leaves memory. A digit signalled out of band (``dtmf()``)
blanks the last frame received and the next one the same way.

Timeline: frame ``n`` is tick ``n`` since the capture began; control calls take effect from the next
frame on and are recorded at ``frames`` (the count so far). If no channel was ever allowed, nothing
is written and no spool directory exists: a declined consent leaves no file behind.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from helpline.recording.audio import DtmfScrubber
from helpline.recording.spool import SegmentWriter, overlays_from_events, spool_meta
from helpline.voice.g711 import FRAME_PCM_BYTES, FRAME_SAMPLES

log = logging.getLogger(__name__)

PAUSE_REASONS = frozenset({"sensitive", "manual", "withdrawn"})
STEREO_FRAME_BYTES = 2 * FRAME_PCM_BYTES
_SILENCE = bytes(FRAME_PCM_BYTES)
_PCM = np.dtype("<i2")


class Capture:
    """One call's live recording. Feed ``frame`` from the tap; everything else is control.

    ``spool`` is this recording's own spool directory (conventionally ``<spool root>/<recording_id>``);
    the writer creates it with the first segment, and only if some channel was ever allowed.
    """

    def __init__(self, recording_id: str, spool: Path, writer: SegmentWriter, *, meta: Mapping[str, Any],
                 segment_frames: int = 50, scrub_dtmf: bool = True) -> None:
        if segment_frames < 1:
            raise ValueError(f"recording {recording_id}: segment_frames must be at least 1")
        self.recording_id = recording_id
        self.spool = spool
        self.segment_frames = segment_frames
        self._writer = writer
        call_id = meta.get("call_id")
        self._call_id = str(call_id) if call_id is not None else None
        self._meta = spool_meta(recording_id, segment_frames, meta)
        json.dumps(self._meta)  # not JSON-able: say so now, not on the writer thread
        self._scrubber = DtmfScrubber() if scrub_dtmf else None
        # gate
        self._allowed = (False, False)
        self._pauses: dict[str, int] = {}
        self._take_caller = False
        self._take_agent = False
        self._ever_allowed = False
        # buffers: frames [self._buffer_start, self._ticks) of each channel
        self._ticks = 0
        self._left = bytearray()
        self._right = bytearray()
        self._buffer_start = 0
        self._cut_bytes = (segment_frames + 1) * FRAME_PCM_BYTES
        self._forced: set[int] = set()  # frames to blank for out-of-band digits
        self._hit_before = False  # whether the frame before the buffer held DTMF
        self._scrub_span: list[int] | None = None  # [start, end) of blanked frames, still growing
        self._zero_segment = b""
        # output
        self._next_index = 0
        self._submitted = False
        self._pending: list[dict[str, Any]] = []  # events not yet handed to the writer
        self._events: list[dict[str, Any]] = []  # all events, for the overlays
        self._closed = False

    # ---- the hot path -----------------------------------------------------------------------------
    def frame(self, caller_pcm: bytes, heard_pcm: bytes) -> None:
        """One tick: 20 ms of what the caller said and what the caller heard (8 kHz PCM16 each)."""
        if self._closed:
            raise RuntimeError(f"recording {self.recording_id} is closed")
        if len(caller_pcm) != FRAME_PCM_BYTES or len(heard_pcm) != FRAME_PCM_BYTES:
            raise ValueError(f"recording {self.recording_id}: frames must be {FRAME_PCM_BYTES} bytes, got "
                             f"{len(caller_pcm)} and {len(heard_pcm)}")
        self._ticks += 1
        self._left += caller_pcm if self._take_caller else _SILENCE
        self._right += heard_pcm if self._take_agent else _SILENCE
        if len(self._left) >= self._cut_bytes:
            self._cut(final=False)

    # ---- control ----------------------------------------------------------------------------------
    def allow(self, *, caller: bool, agent: bool) -> None:
        """Open or close the consent gate per channel (caller = left, agent/what the caller heard =
        right). A closed channel records zeros."""
        if (caller, agent) == self._allowed:
            return
        self._allowed = (caller, agent)
        if caller or agent:
            self._ever_allowed = True
        self._gate()
        self._event({"op": "mark", "kind": "gate", "frame": self._ticks,
                     "data": {"caller": caller, "agent": agent}})

    def pause(self, reason: str) -> None:
        """Silence both channels until every pause of every reason is resumed; a span per reason."""
        self._check_reason(reason)
        count = self._pauses.get(reason, 0)
        self._pauses[reason] = count + 1
        if count == 0:
            self._gate()
            self._event({"op": "pause", "reason": reason, "frame": self._ticks})

    def resume(self, reason: str) -> None:
        """End one ``pause(reason)``; audio flows again when no pause of any reason is open."""
        self._check_reason(reason)
        count = self._pauses.get(reason, 0)
        if count == 0:
            log.warning("recording %s: resume(%r) without a pause, ignored", self.recording_id, reason,
                        extra={"call_id": self._call_id})
            return
        if count > 1:
            self._pauses[reason] = count - 1
            return
        del self._pauses[reason]
        self._gate()
        self._event({"op": "resume", "reason": reason, "frame": self._ticks})

    def mark(self, kind: str, data: Mapping[str, Any]) -> None:
        """A point on the timeline (hold, unhold, transfer, agent, consent ...) with JSON-able data."""
        body = dict(data)
        json.dumps(body)  # fail here, with the caller's stack, if it cannot be stored
        self._event({"op": "mark", "kind": kind, "frame": self._ticks, "data": body})

    def dtmf(self) -> None:
        """A digit was signalled out of band: blank the last frame received and the next one."""
        if self._ticks:
            self._forced.add(self._ticks - 1)
        self._forced.add(self._ticks)

    @property
    def frames(self) -> int:
        """Ticks so far (the timeline position, 20 ms each)."""
        return self._ticks

    @property
    def paused(self) -> bool:
        """Whether a pause of any reason is open."""
        return bool(self._pauses)

    @property
    def recorded(self) -> bool:
        """Whether anything was (or will be) written: some channel was allowed at some point."""
        return self._ever_allowed

    @property
    def overlays(self) -> list[dict[str, Any]]:
        """Pause spans, scrubbed spans and marks so far (open spans end at ``frames``)."""
        events = list(self._events)
        if self._scrub_span is not None:
            events.append({"op": "span", "kind": "dtmf", "start": self._scrub_span[0],
                           "end": self._scrub_span[1]})
        return overlays_from_events(events, self._ticks)

    @property
    def error(self) -> BaseException | None:
        """The first error writing this recording, if any."""
        return self._writer.error(self.spool)

    @property
    def failed(self) -> bool:
        """Whether writing this recording failed (some audio or events may be missing)."""
        return self.error is not None

    async def close(self) -> None:
        """Flush the last segment and wait until everything is on disk. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if not self._ever_allowed or not self._ticks:
            return
        self._event({"op": "closed", "frame": self._ticks})
        self._cut(final=True)
        await self._writer.drain(self.spool)
        if self.failed:
            log.error("recording %s closed with write errors: %s", self.recording_id, self.error,
                      extra={"call_id": self._call_id})

    # ---- internals --------------------------------------------------------------------------------
    def _check_reason(self, reason: str) -> None:
        if reason not in PAUSE_REASONS:
            raise ValueError(f"recording {self.recording_id}: unknown pause reason {reason!r} "
                             f"(one of {', '.join(sorted(PAUSE_REASONS))})")

    def _gate(self) -> None:
        open_ = not self._pauses
        self._take_caller = open_ and self._allowed[0]
        self._take_agent = open_ and self._allowed[1]

    def _event(self, event: dict[str, Any]) -> None:
        self._events.append(event)
        self._pending.append(event)

    def _cut(self, *, final: bool) -> None:
        """Hand the buffered frames (all but the last one, unless ``final``) to the writer."""
        count = len(self._left) // FRAME_PCM_BYTES
        emit = count if final else count - 1
        start = self._buffer_start
        if not self._ever_allowed:  # only zeros so far: nothing to keep, only the timeline advances
            del self._left[:emit * FRAME_PCM_BYTES], self._right[:emit * FRAME_PCM_BYTES]
            self._buffer_start += emit
            self._next_index += 1
            self._forced = {f for f in self._forced if f >= self._buffer_start}
            return
        stereo = np.empty((count * FRAME_SAMPLES, 2), dtype=_PCM)
        stereo[:, 0] = np.frombuffer(self._left, dtype=_PCM)
        stereo[:, 1] = np.frombuffer(self._right, dtype=_PCM)
        blank = self._blanked(stereo, count, emit)
        frames = stereo.reshape(count, FRAME_SAMPLES, 2)
        frames[:emit][blank] = 0
        self._track_scrubs(blank, start)
        data = frames[:emit].tobytes()
        del self._left[:emit * FRAME_PCM_BYTES], self._right[:emit * FRAME_PCM_BYTES]
        self._buffer_start += emit
        self._submit(data)

    def _blanked(self, stereo: NDArray[np.int16], count: int, emit: int) -> NDArray[np.bool_]:
        """Which of the first ``emit`` buffered frames become silence."""
        start = self._buffer_start
        blank = np.zeros(emit, dtype=bool)
        if self._scrubber is not None:
            per_channel = stereo.reshape(count, FRAME_SAMPLES, 2).transpose(2, 0, 1).reshape(
                2 * count, FRAME_SAMPLES)
            digits = self._scrubber.digits(per_channel)
            hit = (digits[:count] >= 0) | (digits[count:] >= 0)
            around = hit.copy()
            around[1:] |= hit[:-1]
            around[:-1] |= hit[1:]
            around[0] |= self._hit_before
            blank |= around[:emit]
            self._hit_before = bool(hit[emit - 1]) if emit else self._hit_before
        if self._forced:
            for frame in [f for f in self._forced if f < start + emit]:
                if frame >= start:
                    blank[frame - start] = True
                self._forced.discard(frame)
        return blank

    def _track_scrubs(self, blank: NDArray[np.bool_], start: int) -> None:
        """Record blanked runs as ``dtmf`` spans, merging runs that continue across cuts."""
        if not blank.any() and self._scrub_span is None:
            return
        for offset in np.flatnonzero(blank).tolist():
            frame = start + offset
            span = self._scrub_span
            if span is not None and span[1] == frame:
                span[1] = frame + 1
                continue
            self._flush_scrub()
            self._scrub_span = [frame, frame + 1]
        span = self._scrub_span
        if span is not None and span[1] < start + len(blank):
            self._flush_scrub()

    def _flush_scrub(self) -> None:
        span = self._scrub_span
        if span is not None:
            self._scrub_span = None
            self._event({"op": "span", "kind": "dtmf", "start": span[0], "end": span[1]})

    def _submit(self, data: bytes) -> None:
        if self._closed:
            self._flush_scrub()
        meta: Mapping[str, Any] | None = None
        if not self._submitted:
            self._submitted = True
            meta = self._meta
            if self._next_index:  # the silent stretch before anything was allowed
                self._zero_segment = bytes(self.segment_frames * STEREO_FRAME_BYTES)
                for index in range(self._next_index):
                    self._writer.submit(self.spool, index, self._zero_segment, (), meta=meta,
                                        call_id=self._call_id)
                    meta = None
        events, self._pending = self._pending, []
        self._writer.submit(self.spool, self._next_index, data, events, meta=meta,
                            call_id=self._call_id)
        self._next_index += 1
