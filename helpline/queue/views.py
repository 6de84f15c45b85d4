"""JSON-able snapshots of agents and waiting callers for the live views (API, websocket, CLI)."""

from __future__ import annotations

from typing import Any

from helpline.queue.agent_state import AgentState
from helpline.queue.entries import QueueEntry


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def agent_view(agent: AgentState, now: float) -> dict[str, Any]:
    deferred = agent.deferred
    return {
        "extension": agent.extension,
        "display_name": agent.profile.display_name,
        "enabled": agent.profile.enabled,
        "presence": agent.presence,
        "reason": agent.reason,
        "presence_since": agent.presence_since,
        "activity": agent.activity,
        "activity_since": agent.activity_since,
        "until": agent.until,
        "remaining_s": _r(max(0.0, agent.until - now)) if agent.until is not None else None,
        "reachable": agent.reachable,
        "routable": agent.routable,
        "excluded_because": agent.exclusion(now),
        "idle_since": agent.idle_since,
        "calls_answered": agent.calls_answered,
        "consecutive_misses": agent.consecutive_misses,
        "last_offer_at": agent.last_offer_at,
        "call_id": agent.call_id,
        "call_queue": agent.work.queue if agent.call_id is not None and agent.work is not None else None,
        "offer_id": agent.offer_id,
        "deferred_presence": {"presence": deferred[0], "reason": deferred[1]} if deferred else None,
        "queues": [{"queue": q, "tier": t} for q, t in sorted(agent.tiers.items())],
        "skills": dict(agent.profile.skills),
    }


def entry_view(entry: QueueEntry, rank: int, now: float) -> dict[str, Any]:
    return {
        "call_id": entry.call_id,
        "rank": rank,
        "state": entry.state,
        "priority": entry.priority,
        "base_priority": entry.base_priority,
        "age_s": _r(entry.age(now)),
        "wait_s": _r(entry.wait(now)),
        "step": entry.step_index,
        "step_entered_at": entry.step_entered_at,
        "requirements": entry.requirements.text,
        "policy_version": entry.policy_version,
        "attempts": entry.attempts,
        "offer_id": entry.offer_id,
    }
