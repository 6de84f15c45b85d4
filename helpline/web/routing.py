"""``GET /api/calls/{id}/routing``: the routing decisions made for a call, read back from the traces
its ``queue.offer`` (and ``queue.no_match``) events carry, and, for one agent, why it was or was not
the one chosen."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from helpline.queue.trace import expand_candidates
from helpline.store.records import CallEventRecord

logger = logging.getLogger(__name__)

NOT_A_CANDIDATE = "not a candidate: not a member of the queue"


class AgentVerdict(BaseModel):
    extension: str
    chosen: bool
    candidate: dict[str, Any] | None = Field(description="The agent's entry in the decision's candidates")
    explanation: str = Field(description="Why the agent was or was not chosen, in words")


class RoutingDecision(BaseModel):
    seq: int = Field(description="Position of the event in the call's event log")
    at: datetime
    type: str = Field(description="queue.offer or queue.no_match")
    queue: str | None
    decision_id: str | None
    chosen: str | None = Field(description="Extension offered the call; null when nobody was")
    policy_version: str | None
    step: Any = Field(description="Relaxation step in force")
    candidates: list[dict[str, Any]] = Field(description="extension, eligible, excluded_because, score")
    trace: dict[str, Any] = Field(description="The complete decision trace")
    agent: AgentVerdict | None = Field(None, description="Present when the agent parameter was given")


class RoutingReport(BaseModel):
    call_id: str
    agent: str | None
    decisions: list[RoutingDecision]


def _trace(event: CallEventRecord) -> dict[str, Any]:
    raw = event.data.get("trace", {})
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            logger.warning("routing trace is not JSON", extra={"seq": event.seq, "event_type": event.type})
            return {}
    return dict(raw) if isinstance(raw, Mapping) else {}


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _reasons(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "; ".join(str(v) for v in value) or "no reason recorded"
    return str(value) if value else "no reason recorded"


def verdict(extension: str, chosen: str | None, candidates: list[dict[str, Any]]) -> AgentVerdict:
    """Why ``extension`` was, or was not, the agent chosen in one decision."""
    entry = next((c for c in candidates if str(c.get("extension")) == extension), None)
    if entry is None:
        return AgentVerdict(extension=extension, chosen=False, candidate=None, explanation=NOT_A_CANDIDATE)
    if chosen == extension:
        explanation = "chosen"
    elif not entry.get("eligible", False):
        explanation = f"not eligible: {_reasons(entry.get('excluded_because'))}"
    elif chosen is None:
        explanation = "eligible, but no agent was offered the call"
    else:
        explanation = f"eligible, ranked below {chosen} (score {entry.get('score')})"
    return AgentVerdict(
        extension=extension, chosen=chosen == extension, candidate=entry, explanation=explanation
    )


def routing_report(call_id: str, events: list[CallEventRecord], agent: str | None) -> RoutingReport:
    decisions = []
    for event in events:
        trace = _trace(event)
        candidates = expand_candidates(trace)
        chosen = _text(trace.get("chosen", event.data.get("extension")))
        entry = trace.get("entry")
        entry = entry if isinstance(entry, Mapping) else {}  # the waiting caller's side of the trace
        decisions.append(RoutingDecision(
            seq=event.seq, at=event.at, type=event.type,
            queue=_text(event.data.get("queue", trace.get("queue", entry.get("queue")))),
            decision_id=_text(trace.get("decision_id")), chosen=chosen,
            policy_version=_text(trace.get("policy_version")), step=trace.get("step", entry.get("step")),
            candidates=candidates, trace=trace,
            agent=None if agent is None else verdict(agent, chosen, candidates),
        ))  # fmt: skip
    return RoutingReport(call_id=call_id, agent=agent, decisions=decisions)
