"""Play tickets: what one audited ``play`` lets a browser fetch.

A reviewer asks to play a time range; that request is what the audit log records. The ``<audio>``
element then fetches the WAV by itself, with many Range requests, so each of those cannot be audited
as a play. Instead the ticket binds the user, the recording and the byte window of the requested time
range for ten minutes, and the audio endpoint serves real samples only inside that window.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

WAV_HEADER_BYTES = 44
TICK_S = 0.020
BYTES_PER_TICK = 640
"""20 ms of stereo PCM16 at 8 kHz: 160 samples x 2 channels x 2 bytes."""
TICKET_TTL_S = 600.0
MAX_TICKETS = 10_000


class TicketRefused(Exception):
    """The ticket is unknown, expired, or belongs to another user or recording."""


@dataclass(frozen=True, slots=True)
class ByteWindow:
    """The bytes ``[first, end)`` of the WAV that carry the samples of a time range."""

    first: int
    end: int

    def overlaps(self, first: int, end: int) -> bool:
        """Whether any byte of ``[first, end)`` may be served for real (the header or the window)."""
        return first < WAV_HEADER_BYTES or (first < self.end and end > self.first)


def byte_window(start_s: float, end_s: float, size: int) -> ByteWindow:
    """The data bytes covering ``[start_s, end_s)``, widened to whole 20 ms ticks and clipped to the
    file; the 44-byte header is always readable on top of it."""
    first_tick = math.floor(start_s / TICK_S + 1e-9)
    end_tick = math.ceil(end_s / TICK_S - 1e-9)
    first = min(WAV_HEADER_BYTES + first_tick * BYTES_PER_TICK, size)
    end = min(WAV_HEADER_BYTES + end_tick * BYTES_PER_TICK, size)
    return ByteWindow(first, max(first, end))


@dataclass(frozen=True, slots=True)
class PlayTicket:
    token: str
    user: str
    recording_id: str
    start_s: float
    end_s: float
    window: ByteWindow
    expires_at: float


class PlayTickets:
    """Tickets live in memory: they are short-lived and only this process serves their audio."""

    def __init__(self, ttl_s: float = TICKET_TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._tickets: dict[str, PlayTicket] = {}

    @property
    def ttl_s(self) -> float:
        return self._ttl_s

    def issue(self, user: str, recording_id: str, start_s: float, end_s: float, size: int) -> PlayTicket:
        now = self._clock()
        self._forget_expired(now)
        if len(self._tickets) >= MAX_TICKETS:
            oldest = min(self._tickets.values(), key=lambda t: t.expires_at)
            del self._tickets[oldest.token]
        ticket = PlayTicket(
            token=secrets.token_urlsafe(32), user=user, recording_id=recording_id, start_s=start_s,
            end_s=end_s, window=byte_window(start_s, end_s, size), expires_at=now + self._ttl_s,
        )  # fmt: skip
        self._tickets[ticket.token] = ticket
        return ticket

    def check(self, token: str, user: str, recording_id: str) -> PlayTicket:
        """The ticket, when it is alive and was issued to ``user`` for ``recording_id``."""
        ticket = self._tickets.get(token)
        if ticket is None or ticket.expires_at <= self._clock():
            raise TicketRefused("the play ticket is unknown or has expired")
        if not secrets.compare_digest(ticket.user, user) or ticket.recording_id != recording_id:
            raise TicketRefused("the play ticket was issued to another user or recording")
        return ticket

    def _forget_expired(self, now: float) -> None:
        for token in [t.token for t in self._tickets.values() if t.expires_at <= now]:
            del self._tickets[token]
