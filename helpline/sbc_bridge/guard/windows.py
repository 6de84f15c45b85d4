"""Bounded per-key memories the guard keeps about sources and users.

Everything the guard remembers per source is keyed by something an attacker chooses (an address, a
user name), so every table here has a hard bound and forgets the least recently seen key first: a
distributed attack from a million addresses costs a fixed amount of memory (A7).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LruDict(Generic[K, V]):
    """A map holding at most ``capacity`` keys; adding one more forgets the least recently used."""

    __slots__ = ("_capacity", "_items")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The value for ``key`` (now the most recently used), or None."""
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def setdefault(self, key: K, make: Callable[[], V]) -> V:
        """The value for ``key``, created by ``make()`` (evicting the oldest key) when absent."""
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
            return value
        value = make()
        self._items[key] = value
        if len(self._items) > self._capacity:
            self._items.popitem(last=False)
        return value

    def pop(self, key: K) -> V | None:
        return self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items


class ThresholdWindow:
    """Counts events per key and says when ``threshold`` of them fell within ``window_s``.

    Only the last ``threshold`` timestamps of a key are kept (a ring), so a key costs a fixed amount
    of memory however many events it sends, and the test is one subtraction.
    """

    __slots__ = ("_hits", "threshold", "window_s")

    def __init__(self, threshold: int, window_s: float, capacity: int) -> None:
        self.threshold = threshold
        self.window_s = window_s
        self._hits: LruDict[str, deque[float]] = LruDict(capacity)

    def _ring(self) -> deque[float]:
        return deque(maxlen=self.threshold)

    def hit(self, key: str, now: float) -> bool:
        """Count one event for ``key``; True when it is the ``threshold``-th within the window."""
        ring = self._hits.setdefault(key, self._ring)
        ring.append(now)
        return len(ring) == self.threshold and now - ring[0] <= self.window_s

    def count(self, key: str, now: float) -> int:
        """How many of ``key``'s remembered events are within the window ending at ``now``."""
        ring = self._hits.get(key)
        return 0 if ring is None else sum(1 for at in ring if now - at <= self.window_s)

    def forget(self, key: str) -> None:
        """Start ``key`` from zero (after a ban or a lift: old events must not count twice)."""
        self._hits.pop(key)

    def __len__(self) -> int:
        return len(self._hits)


class EventGate:
    """Lets one report per key through every ``interval_s`` and counts the ones it held back.

    A flood must not turn into an event (or a log line) per packet: the first event for a key goes
    out at once, later ones within the interval are only counted, and the next one that goes out
    carries how many were held back.
    """

    __slots__ = ("_interval", "_state")

    def __init__(self, interval_s: float, capacity: int) -> None:
        self._interval = interval_s
        self._state: LruDict[Hashable, list[float]] = LruDict(capacity)

    def due(self, key: Hashable, now: float) -> int | None:
        """None while ``key`` is held back; else the number held back since its last report."""
        state = self._state.get(key)
        if state is None:
            self._state.setdefault(key, lambda: [now, 0.0])
            return 0
        if now - state[0] >= self._interval:
            held = int(state[1])
            state[0], state[1] = now, 0.0
            return held
        state[1] += 1
        return None
