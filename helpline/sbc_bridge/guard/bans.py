"""Who is banned: source addresses and locked users, with expiry, a bound, and change reports.

The table is what the hot path reads (one dict lookup per datagram), so a ban keeps its end as an
epoch float next to the public :class:`Ban`, and expiry happens on read plus a sweep of a heap of
ends (no timer per ban). Every change (banned, lifted, expired) goes to one ``on_change`` callback,
which the guard turns into events and the server into rows of the ``bans`` table.
"""

from __future__ import annotations

import builtins
import heapq
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

logger = logging.getLogger(__name__)

BanKind = Literal["source", "user"]
BanAction = Literal["banned", "lifted", "expired"]
EXPIRY = "expiry"


@dataclass(frozen=True, slots=True)
class Ban:
    """One ban: ``key`` is an IP address (kind ``source``) or an extension (kind ``user``: a lock).

    ``until`` None lasts until lifted. ``by`` says who imposed it (``guard`` for automatic ones).
    Times are timezone-aware UTC.
    """

    key: str
    kind: BanKind
    reason: str
    since: datetime
    until: datetime | None
    by: str = "guard"


@dataclass(frozen=True, slots=True)
class BanChange:
    """A change to the table: ``banned`` (new or renewed), ``lifted`` (``by`` someone) or ``expired``."""

    action: BanAction
    ban: Ban
    by: str | None = None


@dataclass(slots=True)
class BanEntry:
    """A ban and its end as an epoch float (``inf`` for none), what the hot path compares against."""

    ban: Ban
    ends: float
    seen: int = 0  # packets dropped because of it (admit_bytes counts)
    report_at: float = 0.0  # monotonic time its next banned-traffic report may go out


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


class BanTable:
    """At most ``capacity`` bans; when full, the oldest ban makes room (reported as expired).

    ``wall`` is the wall clock (epoch seconds), since bans outlive the process. ``entries`` is the
    live map for the hot path: read it, never write it.
    """

    def __init__(
        self,
        capacity: int,
        *,
        wall: Callable[[], float],
        on_change: Callable[[BanChange], None] | None = None,
    ) -> None:
        self._capacity = capacity
        self._wall = wall
        self.on_change = on_change
        self.entries: dict[str, BanEntry] = {}
        self._ends: builtins.list[tuple[float, str]] = []

    # --- reading ---

    def check(self, key: str) -> Ban | None:
        """The active ban on ``key``, or None (an expired one is removed and reported)."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        if entry.ends <= self._wall():
            self._expire(key, entry)
            return None
        return entry.ban

    def list(self) -> builtins.list[Ban]:
        """Every active ban, oldest first (expired ones are removed on the way)."""
        self.sweep()
        return [entry.ban for entry in self.entries.values()]

    def __len__(self) -> int:
        return len(self.entries)

    # --- changing ---

    def ban(
        self, key: str, kind: BanKind, reason: str, duration_s: float | None, *, by: str = "guard"
    ) -> Ban:
        """Ban ``key`` for ``duration_s`` seconds (None: until lifted); renews an existing ban."""
        now = self._wall()
        ends = float("inf") if duration_s is None else now + duration_s
        ban = Ban(key, kind, reason, _at(now), None if duration_s is None else _at(ends), by)
        self._put(ban, ends)
        self._report(BanChange("banned", ban))
        return ban

    def lift(self, key: str, by: str) -> Ban | None:
        """End the ban on ``key`` now; the ban that was lifted, or None when there was none."""
        entry = self.entries.pop(key, None)
        if entry is None:
            return None
        self._report(BanChange("lifted", entry.ban, by))
        return entry.ban

    def restore(self, bans: Iterable[Ban]) -> int:
        """Put back bans kept elsewhere (the store) without reporting them again; how many were."""
        now = self._wall()
        restored = 0
        for ban in bans:
            ends = float("inf") if ban.until is None else ban.until.timestamp()
            if ends <= now:
                continue
            self._put(ban, ends)
            restored += 1
        return restored

    def sweep(self) -> int:
        """Remove and report every ban that has ended; how many did."""
        now = self._wall()
        expired = 0
        ends = self._ends
        while ends and ends[0][0] <= now:
            at, key = heapq.heappop(ends)
            entry = self.entries.get(key)
            if entry is not None and entry.ends == at:
                self._expire(key, entry)
                expired += 1
        return expired

    # --- internals ---

    def _put(self, ban: Ban, ends: float) -> None:
        self.entries.pop(ban.key, None)
        self.entries[ban.key] = BanEntry(ban, ends)
        if ends != float("inf"):
            heapq.heappush(self._ends, (ends, ban.key))
        while len(self.entries) > self._capacity:
            oldest = next(iter(self.entries))
            evicted = self.entries.pop(oldest)
            logger.warning("ban table full (%d): dropping the oldest ban on %s", self._capacity, oldest)
            self._report(BanChange("expired", evicted.ban, EXPIRY))
        if len(self._ends) > 2 * self._capacity + 64:  # stale heap items from renewals and lifts
            self._ends = [(at, key) for at, key in self._ends if key in self.entries]
            heapq.heapify(self._ends)

    def _expire(self, key: str, entry: BanEntry) -> None:
        if self.entries.get(key) is entry:
            del self.entries[key]
            self._report(BanChange("expired", entry.ban, EXPIRY))

    def _report(self, change: BanChange) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(change)
        except Exception:
            logger.exception("ban change handler failed for %s %s", change.action, change.ban.key)
