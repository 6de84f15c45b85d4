"""Token buckets: per (source, method class) and one global pool per method class (A6, A7).

A source gets ``burst`` requests at once and ``per_source`` a second after that; the listener set as
a whole gets ``global`` a second. There are two global pools, one for trusted sources (the carriers)
and one for everybody else, so a distributed flood of strangers cannot spend the carriers' budget:
carriers see 503 + Retry-After only when *they* are over capacity.
"""

from __future__ import annotations

from typing import Literal

from .settings import MethodClass, RateSettings, method_class
from .windows import LruDict

Pool = Literal["trusted", "untrusted"]


class TokenBucket:
    """``rate`` tokens a second up to ``burst``; a request takes one. Refilled lazily on use."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float) -> bool:
        """Take one token if there is one."""
        tokens = self.tokens + (now - self.stamp) * self.rate
        self.stamp = now
        if tokens > self.burst:
            tokens = self.burst
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return True
        self.tokens = tokens
        return False


class RateLimiter:
    """Per-source buckets in a bounded LRU plus the global pools.

    A source forgotten by the LRU comes back with a full bucket; with ``capacity`` far above the
    number of sources that really talk to us, only an attacker rotating through more addresses than
    that benefits, and the global pool still holds it.
    """

    def __init__(self, rates: RateSettings, capacity: int, now: float) -> None:
        self._rates = rates
        self._sources: LruDict[tuple[str, MethodClass], TokenBucket] = LruDict(capacity)
        self._global: dict[tuple[Pool, MethodClass], TokenBucket] = {}
        for pool in ("trusted", "untrusted"):
            for cls in ("INVITE", "REGISTER", "OPTIONS", "other"):
                rate = rates.for_class(cls)
                burst = max(rate.global_rate, 1.0)  # one second's worth at once
                self._global[(pool, cls)] = TokenBucket(rate.global_rate, burst, now)

    def allow_source(self, ip: str, method: str, now: float) -> bool:
        """Whether ``ip`` may send one more ``method`` request now (takes a token)."""
        cls = method_class(method)
        bucket = self._sources.get((ip, cls))
        if bucket is None:
            rate = self._rates.for_class(cls)
            bucket = self._sources.setdefault(
                (ip, cls), lambda: TokenBucket(rate.per_source, rate.burst, now)
            )
        return bucket.take(now)

    def allow_global(self, pool: Pool, method: str, now: float) -> bool:
        """Whether the pool has room for one more ``method`` request now (takes a token)."""
        return self._global[(pool, method_class(method))].take(now)

    def tracked_sources(self) -> int:
        """How many (source, method class) buckets are held (bounded by the capacity)."""
        return len(self._sources)
