"""Queue KPIs recomputed from the event log alone (research §4, D8).

Input: events as stored (``{"type", "at", "call_id", "data"}``, ``at`` a datetime or float seconds),
in any order. Only ``queue.joined``, ``queue.connected``, ``queue.left``, ``queue.ewt`` and
``agent.*`` events are read, so changing a threshold re-derives history with the new rule.

Definitions (``T`` = ``sl_threshold_s``, ``s`` = ``short_abandon_s``; per queue and in total):

* offered ``Q``: ``queue.joined`` events.
* answered ``H``: ``queue.connected`` events; ``H_T``: those with ``wait_s <= T``.
* abandoned ``A``: ``queue.left`` with reason ``abandoned``; short abandons ``A_s``: ``wait_s < s``.
  Other exits (timeout, left, transferred, left_empty) are counted apart (``other_exits``) and are
  in no denominator below except ``Q``.
* **service level** ``SL = H_T / (H + A - A_s)`` (None when the denominator is 0).
* **ASA** ``= Σ wait_s over answered / H`` (wait from joining the queue to the agent's answer;
  ringing time included: the caller waits through it).
* **AHT** ``= Σ (talk_s + hold_s + wrapup_s) / handled``, from the ``handled`` block that the
  ``agent.activity`` event ending each call's wrap-up carries; attributed to the call's queue.
* **abandonment rate** ``= (A - A_s) / (Q - A_s)``.
* **longest wait**: the largest ``wait_s`` of a caller answered or leaving in the window.
* **occupancy** ``= handle / (handle + available)`` over agents: each ``agent.*`` event carries the
  agent's state, which lasts until its next event (or the end of the window). Handle time is time
  ``connected``, ``held`` or in ``wrapup``; available time is ``ready`` and reachable while ``idle``
  or ``offered`` (ringing). Not-ready, logged-out, unreachable and cooldown time count in neither.
* **EWT accuracy**: each ``queue.ewt`` prediction (``p50_s``, ``p90_s``) made at ``t`` for a call
  later answered at ``t_c`` has realised wait ``t_c - t``. MAE ``= mean |p50 - realised|``, bias
  ``= mean (p50 - realised)`` (positive: we over-estimate), P90 coverage ``= share with realised <=
  p90``. Predictions for callers who never got an agent are censored and left out.

Call counts use the event that decides them (joined for ``Q``, connected for ``H``, left for ``A``),
taken when its ``at`` is in ``[since, until)``; occupancy intervals are clipped to the window.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

FORMULAS: Mapping[str, str] = {
    "service_level": "answered_within_T / (answered + abandoned - short_abandons)",
    "asa": "sum(wait of answered) / answered",
    "aht": "sum(talk + hold + wrapup) / handled",
    "abandonment_rate": "(abandoned - short_abandons) / (offered - short_abandons)",
    "occupancy": "handle / (handle + ready idle or ringing time)",
    "ewt": "MAE mean|p50 - realised|, bias mean(p50 - realised), coverage P(realised <= p90)",
}
HANDLE_ACTIVITIES = frozenset({"connected", "held", "wrapup"})
AVAILABLE_ACTIVITIES = frozenset({"idle", "offered"})


def _seconds(at: Any) -> float:
    if isinstance(at, datetime):
        return at.timestamp()
    return float(at)


def _field(event: Any, name: str) -> Any:
    if isinstance(event, Mapping):
        return event.get(name)
    return getattr(event, name, None)


def _ratio(num: float, den: float) -> float | None:
    return None if den <= 0 else num / den


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True, slots=True)
class EwtAccuracy:
    predictions: int = 0
    mae_s: float | None = None
    bias_s: float | None = None
    p90_coverage: float | None = None


@dataclass(frozen=True, slots=True)
class QueueKpis:
    offered: int = 0
    answered: int = 0
    answered_within_threshold: int = 0
    abandoned: int = 0
    short_abandons: int = 0
    other_exits: int = 0
    handled: int = 0
    service_level: float | None = None
    asa_s: float | None = None
    aht_s: float | None = None
    abandonment_rate: float | None = None
    avg_time_to_abandon_s: float | None = None
    longest_wait_s: float | None = None
    ewt: EwtAccuracy = field(default_factory=EwtAccuracy)


@dataclass(frozen=True, slots=True)
class AgentTime:
    handle_s: float
    available_s: float
    occupancy: float | None


@dataclass(frozen=True, slots=True)
class Kpis:
    since: float | None
    until: float | None
    sl_threshold_s: float
    short_abandon_s: float
    total: QueueKpis
    queues: dict[str, QueueKpis]
    occupancy: float | None
    agents: dict[str, AgentTime]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["formulas"] = dict(FORMULAS)
        return out


class _Acc:
    """Running sums for one queue (or the total)."""

    def __init__(self) -> None:
        self.offered = self.answered = self.within = self.abandoned = self.short = self.other = 0
        self.handled = 0
        self.wait_answered = self.wait_abandoned = self.handle = 0.0
        self.longest: float | None = None
        self.ewt_errors: list[float] = []
        self.ewt_covered = 0

    def wait(self, wait: float) -> None:
        self.longest = wait if self.longest is None else max(self.longest, wait)

    def result(self) -> QueueKpis:
        n = len(self.ewt_errors)
        ewt = EwtAccuracy(
            predictions=n,
            mae_s=_rounded(sum(abs(e) for e in self.ewt_errors) / n, 3) if n else None,
            bias_s=_rounded(sum(self.ewt_errors) / n, 3) if n else None,
            p90_coverage=_rounded(self.ewt_covered / n) if n else None,
        )
        return QueueKpis(
            offered=self.offered, answered=self.answered, answered_within_threshold=self.within,
            abandoned=self.abandoned, short_abandons=self.short, other_exits=self.other, handled=self.handled,
            service_level=_rounded(_ratio(self.within, self.answered + self.abandoned - self.short)),
            asa_s=_rounded(_ratio(self.wait_answered, self.answered), 3),
            aht_s=_rounded(_ratio(self.handle, self.handled), 3),
            abandonment_rate=_rounded(_ratio(self.abandoned - self.short, self.offered - self.short)),
            avg_time_to_abandon_s=_rounded(_ratio(self.wait_abandoned, self.abandoned), 3),
            longest_wait_s=self.longest, ewt=ewt,
        )  # fmt: skip


def compute_kpis(
    events: Iterable[Mapping[str, Any]],
    *,
    sl_threshold_s: float,
    short_abandon_s: float,
    since: float | None = None,
    until: float | None = None,
) -> Kpis:
    """The KPIs of the module docstring, per queue and in total, for events in ``[since, until)``."""
    ordered = sorted(
        ((_seconds(_field(e, "at")), i, e) for i, e in enumerate(events)), key=lambda item: (item[0], item[1])
    )

    def inside(t: float) -> bool:
        return (since is None or t >= since) and (until is None or t < until)

    per_queue: dict[str, _Acc] = defaultdict(_Acc)
    total = _Acc()
    connected_at: dict[str, float] = {}
    predictions: list[tuple[float, str, str, float, float | None]] = []
    agent_state: dict[str, tuple[float, str]] = {}  # extension -> (since, "handle"|"available"|"other")
    agent_handle: dict[str, float] = defaultdict(float)
    agent_available: dict[str, float] = defaultdict(float)
    last_t = since

    def close_interval(ext: str, t: float) -> None:
        state = agent_state.get(ext)
        if state is None:
            return
        start, kind = state
        lo = start if since is None else max(start, since)
        hi = t if until is None else min(t, until)
        if hi > lo:
            if kind == "handle":
                agent_handle[ext] += hi - lo
            elif kind == "available":
                agent_available[ext] += hi - lo

    for t, _, event in ordered:
        kind = str(_field(event, "type") or "")
        data: Mapping[str, Any] = _field(event, "data") or {}
        call_id = _field(event, "call_id")
        last_t = t if last_t is None else max(last_t, t)
        if kind.startswith("agent."):
            ext = data.get("extension")
            if not isinstance(ext, str) or "activity" not in data:
                continue
            close_interval(ext, t)
            activity, presence = data.get("activity"), data.get("presence")
            if activity in HANDLE_ACTIVITIES:
                state = "handle"
            elif presence == "ready" and data.get("reachable", True) and activity in AVAILABLE_ACTIVITIES:
                state = "available"
            else:
                state = "other"
            agent_state[ext] = (t, state)
            handled = data.get("handled")
            if isinstance(handled, Mapping) and inside(t):
                handle = sum(float(handled.get(k) or 0.0) for k in ("talk_s", "hold_s", "wrapup_s"))
                for acc in (per_queue[str(handled.get("queue"))], total):
                    acc.handled += 1
                    acc.handle += handle
            continue
        queue = str(data.get("queue"))
        if kind == "queue.connected" and isinstance(call_id, str):
            connected_at.setdefault(call_id, t)
        if kind == "queue.ewt" and isinstance(call_id, str) and data.get("p50_s") is not None and inside(t):
            p90 = data.get("p90_s")
            predictions.append((t, call_id, queue, float(data["p50_s"]), None if p90 is None else float(p90)))
        if not inside(t):
            continue
        wait = float(data.get("wait_s") or 0.0)
        for acc in (per_queue[queue], total):
            if kind == "queue.joined":
                acc.offered += 1
            elif kind == "queue.connected":
                acc.answered += 1
                acc.within += wait <= sl_threshold_s
                acc.wait_answered += wait
                acc.wait(wait)
            elif kind == "queue.left" and data.get("reason") != "answered":
                acc.wait(wait)
                if data.get("reason") == "abandoned":
                    acc.abandoned += 1
                    acc.short += wait < short_abandon_s
                    acc.wait_abandoned += wait
                else:
                    acc.other += 1

    end = until if until is not None else last_t
    if end is not None:
        for ext in list(agent_state):
            close_interval(ext, end)

    for t, call_id, queue, p50, p90 in predictions:
        answered = connected_at.get(call_id)
        if answered is None or answered < t:
            continue
        realised = answered - t
        for acc in (per_queue[queue], total):
            acc.ewt_errors.append(p50 - realised)
            acc.ewt_covered += p90 is not None and realised <= p90

    agents = {
        ext: AgentTime(
            round(agent_handle[ext], 3), round(agent_available[ext], 3),
            _rounded(_ratio(agent_handle[ext], agent_handle[ext] + agent_available[ext])),
        )
        for ext in sorted(agent_state)
    }  # fmt: skip
    handle_all = sum(agent_handle.values())
    available_all = sum(agent_available.values())
    return Kpis(
        since=since, until=until, sl_threshold_s=sl_threshold_s, short_abandon_s=short_abandon_s,
        total=total.result(), queues={q: acc.result() for q, acc in sorted(per_queue.items())},
        occupancy=_rounded(_ratio(handle_all, handle_all + available_all)), agents=agents,
    )  # fmt: skip
