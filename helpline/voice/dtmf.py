"""RFC 4733 telephone-events: receiving keypad digits from RTP and sending them.

A sender repeats an event's packets while the key is down (same RTP timestamp, growing duration) and
sends the end packet three times. The receiver therefore reports a digit once per RTP timestamp: on
its first end packet, or when a new event (a new timestamp) shows that the old one's end packets
were all lost. Repeated digits ("11") are distinct events because each has its own timestamp.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from helpline.voice.g711 import SAMPLE_RATE

EVENT_DIGITS = "0123456789*#ABCD"
DIGIT_EVENTS = {digit: code for code, digit in enumerate(EVENT_DIGITS)}
_END_BIT = 0x80
_VOLUME_MASK = 0x3F
_EVENT = struct.Struct("!BBH")


def is_dtmf_digit(digit: str) -> bool:
    """Whether ``digit`` is one of 0-9 * # A-D."""
    return len(digit) == 1 and digit in DIGIT_EVENTS


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """One decoded RFC 4733 payload block."""

    event: int
    end: bool
    volume: int
    duration: int  # in RTP timestamp units (8 kHz)


def decode_event(payload: bytes) -> TelephoneEvent | None:
    """The first event block of a telephone-event payload; ``None`` if too short."""
    if len(payload) < 4:
        return None
    event, flags, duration = _EVENT.unpack_from(payload)
    return TelephoneEvent(event, bool(flags & _END_BIT), flags & _VOLUME_MASK, duration)


def encode_event(digit: str, *, end: bool, duration: int, volume: int = 10) -> bytes:
    """A telephone-event payload for ``digit`` (``duration`` in 8 kHz timestamp units)."""
    if not is_dtmf_digit(digit):
        raise ValueError(f"not a DTMF digit: {digit!r} (expected one of {EVENT_DIGITS})")
    return _EVENT.pack(DIGIT_EVENTS[digit], (_END_BIT if end else 0) | (volume & _VOLUME_MASK),
                       min(duration, 0xFFFF))


class DtmfReceiver:
    """Turns a stream of telephone-event packets into digits, each reported exactly once.

    ``on_digit(digit, duration_ms)`` is called when an event ends. Call ``feed`` with the RTP
    timestamp and payload of every packet that carries the negotiated telephone-event type.
    """

    __slots__ = ("_current_duration", "_current_event", "_current_ts", "_reported", "on_digit")

    def __init__(self, on_digit: Callable[[str, int], None]) -> None:
        self.on_digit = on_digit
        self._current_ts: int | None = None
        self._current_event = -1
        self._current_duration = 0
        # Recently reported event timestamps: a late end packet of an old event must not count again.
        self._reported: deque[int] = deque(maxlen=8)

    def feed(self, timestamp: int, payload: bytes) -> None:
        """Account one telephone-event packet."""
        block = decode_event(payload)
        if block is None or block.event >= len(EVENT_DIGITS):
            return  # flash-hook and other non-keypad events are not digits
        if timestamp in self._reported:
            return
        if timestamp != self._current_ts:
            self._flush_unended()
            self._current_ts = timestamp
            self._current_event = block.event
        self._current_duration = max(self._current_duration, block.duration)
        if block.end:
            self._report()

    def _flush_unended(self) -> None:
        if self._current_ts is not None and self._current_ts not in self._reported:
            self._report()
        self._current_duration = 0

    def _report(self) -> None:
        assert self._current_ts is not None
        self._reported.append(self._current_ts)
        self.on_digit(EVENT_DIGITS[self._current_event], self._current_duration * 1000 // SAMPLE_RATE)


def dtmf_payloads(digit: str, duration_ms: int = 100, *, frame_ms: int = 20,
                  end_repeats: int = 3) -> Iterator[tuple[bytes, bool]]:
    """The payloads a sender emits for one keypress, one per frame: ``(payload, is_first)``.

    All packets of the event share one RTP timestamp (the caller's); the marker bit goes on the first.
    """
    step = SAMPLE_RATE * frame_ms // 1000
    total = max(step, SAMPLE_RATE * duration_ms // 1000)
    elapsed = step
    first = True
    while elapsed < total:
        yield encode_event(digit, end=False, duration=elapsed), first
        first = False
        elapsed += step
    for _ in range(end_repeats):
        yield encode_event(digit, end=True, duration=total), first
        first = False
