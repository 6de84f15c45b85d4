"""Estimated wait time: position- and pool-aware, with a P90 band (research §7.5, D2).

Method ``erlang_p`` (the README quotes this):

1. **Pool.** The agents who could take this caller: members of its queue, enabled, ``ready`` and
   reachable (any activity: idle, ringing, talking, wrap-up, cooldown), whose skills satisfy the
   caller's active requirements.
2. **Position** ``p``: 1 + the number of *queued* callers, in any queue, that the global order
   (``entries.py``) serves before this one and that at least one pool agent could take. Callers
   competing for other agents do not count, so a Spanish caller behind twenty English-only callers
   can still be first. With an empty pool, the position is the rank among the callers waiting in
   the same queue.
3. **Effective agents** ``N_eff = Σ over the pool of 1 / q_a``, where ``q_a`` is the number of the
   agent's queues that have callers waiting (at least 1): an agent shared by three busy queues gives
   each a third of their time. This is the documented proxy for "share of time on this pool".
4. **Handle time** ``h``: an exponentially weighted moving average of talk + hold + wrap-up per
   queue (``alpha = 0.2`` by default), seeded with a configured default (180 s) until calls complete.
5. **Completions needed** ``k = p - I``, where ``I`` is the number of pool agents routable right now
   (idle ones take callers at once). If ``k ≤ 0`` the estimate is 0 s.
6. Otherwise agents finish calls at rate ``N_eff / h`` and, handle times being treated as exponential
   (memoryless, so an agent's elapsed talk time does not shorten the residual), the wait is the sum
   of ``k`` exponential gaps: Erlang-k (Gamma) with mean ``k·h/N_eff`` and standard deviation
   ``√k·h/N_eff``. P50 and P90 are its quantiles via the Wilson-Hilferty approximation
   ``q_z = k·θ·(1 - 1/(9k) + z·√(1/(9k)))³`` with ``θ = h/N_eff`` (z = 0 and 1.2816).
7. ``N_eff == 0`` (nobody staffed could ever take the caller): ``p50_s = p90_s = None`` and
   ``method = "unknown"``; announce position only.

It ignores abandonment ahead (it over-estimates when callers ahead give up) and arrivals of higher
priority after the prediction (it under-estimates then); the accuracy report (``kpi.py``: MAE, bias,
P90 coverage from ``queue.ewt`` against the realised wait) says how much that matters in practice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

Z90 = 1.2815515655446004
METHOD = "erlang_p"


@dataclass(frozen=True, slots=True)
class Ewt:
    position: int
    n_eff: float
    aht_s: float
    p50_s: float | None
    p90_s: float | None
    method: str
    idle_eligible: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "n_eff": round(self.n_eff, 3),
            "aht_s": round(self.aht_s, 1),
            "p50_s": None if self.p50_s is None else round(self.p50_s, 1),
            "p90_s": None if self.p90_s is None else round(self.p90_s, 1),
            "method": self.method,
            "idle_eligible": self.idle_eligible,
        }


def gamma_quantile(shape: float, scale: float, z: float) -> float:
    """Wilson-Hilferty approximation of a Gamma(shape, scale) quantile at standard-normal score z."""
    c = 1.0 / (9.0 * shape)
    return shape * scale * max(0.0, 1.0 - c + z * math.sqrt(c)) ** 3


def estimate(position: int, n_eff: float, idle_eligible: int, aht_s: float) -> Ewt:
    """The wait for the caller at ``position`` given the pool (see the module docstring)."""
    if n_eff <= 0:
        return Ewt(position, 0.0, aht_s, None, None, "unknown", idle_eligible)
    k = position - idle_eligible
    if k <= 0:
        return Ewt(position, n_eff, aht_s, 0.0, 0.0, METHOD, idle_eligible)
    theta = aht_s / n_eff
    return Ewt(
        position, n_eff, aht_s, gamma_quantile(k, theta, 0.0), gamma_quantile(k, theta, Z90), METHOD,
        idle_eligible,
    )  # fmt: skip


class HandleTimes:
    """Per-queue EWMA of handle time (talk + hold + wrap-up), seeded with a default."""

    def __init__(self, default_s: float = 180.0, alpha: float = 0.2) -> None:
        if default_s <= 0 or not 0 < alpha <= 1:
            raise ValueError("default_s must be > 0 and alpha in (0, 1]")
        self.default_s = default_s
        self.alpha = alpha
        self._by_queue: dict[str, float] = {}

    def get(self, queue: str) -> float:
        return self._by_queue.get(queue, self.default_s)

    def observe(self, queue: str, handle_s: float) -> None:
        old = self.get(queue)
        self._by_queue[queue] = old + self.alpha * (max(handle_s, 0.0) - old)
