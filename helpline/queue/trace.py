"""Decision traces: why a caller was offered to one agent, and why every other member was not.

A trace is built for every offer and stored with the ``queue.offer`` event, so ``GET
/api/calls/{id}/routing`` can answer "why that agent" and "why not agent X" from the event log alone.
It lists every member of the entry's queue; an agent absent from ``candidates`` was not a member
(:data:`NOT_A_MEMBER`). The same shape, with ``chosen = None``, describes a waiting caller that no
agent can take right now (``RoutingEngine.last_trace``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

NOT_A_MEMBER = "not a member of queue"


@dataclass(frozen=True, slots=True)
class Candidate:
    extension: str
    eligible: bool
    excluded_because: str | None = None
    score: dict[str, Any] | None = None  # criterion -> value, eligible agents only

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"extension": self.extension, "eligible": self.eligible}
        if self.excluded_because is not None:
            out["excluded_because"] = self.excluded_because
        if self.score is not None:
            out["score"] = self.score
        return out


@dataclass(frozen=True, slots=True)
class DecisionTrace:
    decision_id: str  # the offer id ("<call>.<attempt>"), or "<call>.query" for a live evaluation
    at: float
    trigger: str  # the inputs since the previous round of offers ("agent.presence 1001 ready, ...")
    call_id: str
    queue: str
    priority: int
    age_s: float
    wait_s: float
    step: int  # index of the active relaxation step, -1 for none
    requirements: str
    policy_version: str
    score_order: tuple[str, ...]
    candidates: tuple[Candidate, ...]
    chosen: str | None
    tie_break: str | None  # "score" (the vector decided), "hash" (equal vectors), None (no choice)

    def to_dict(self) -> dict[str, Any]:
        """The stored form. Candidates are compact, because a trace is written for every offer and
        lists every member of the queue: ``eligible`` is ``[[extension, [score values in
        score_order]], ...]`` in candidate order, and ``excluded`` maps each reason to the extensions
        it excludes (most share one: logged out, on a call...). About 10 bytes a member instead of
        100; :func:`expand_candidates` gives back the one-dict-per-member list."""
        eligible: list[list[Any]] = []
        excluded: dict[str, list[str]] = {}
        for c in self.candidates:
            if c.eligible:
                score = c.score or {}
                eligible.append([c.extension, [score.get(k) for k in self.score_order]])
            else:
                excluded.setdefault(c.excluded_because or "not eligible", []).append(c.extension)
        return {
            "decision_id": self.decision_id,
            "at": self.at,
            "trigger": self.trigger,
            "entry": {
                "call_id": self.call_id, "queue": self.queue, "priority": self.priority,
                "age_s": round(self.age_s, 3), "wait_s": round(self.wait_s, 3), "step": self.step,
                "requirements": self.requirements,
            },
            "policy_version": self.policy_version,
            "score_order": list(self.score_order),
            "eligible": eligible,
            "excluded": excluded,
            "chosen": self.chosen,
            "tie_break": self.tie_break,
        }  # fmt: skip

    def why_not(self, extension: str) -> str | None:
        """Why ``extension`` was not chosen: its exclusion, "lower score than X", or None if chosen."""
        if extension == self.chosen:
            return None
        for candidate in self.candidates:
            if candidate.extension == extension:
                if candidate.excluded_because is not None:
                    return candidate.excluded_because
                return f"eligible, ranked below {self.chosen}" if self.chosen else "eligible"
        return NOT_A_MEMBER


def expand_candidates(trace: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The stored trace's candidates as one dict per member (extension, eligible, excluded_because or
    score), eligible ones first in their rank order; traces stored in the older verbose form
    (``candidates``) pass through."""
    verbose = trace.get("candidates")
    if isinstance(verbose, list):
        return [dict(c) for c in verbose if isinstance(c, Mapping)]
    order = [str(k) for k in trace.get("score_order") or ()]
    out: list[dict[str, Any]] = []
    for item in trace.get("eligible") or ():
        if isinstance(item, list | tuple) and len(item) == 2:
            values = item[1] if isinstance(item[1], list | tuple) else []
            score = dict(zip(order, values, strict=False))
            out.append({"extension": str(item[0]), "eligible": True, "score": score})
    excluded = trace.get("excluded")
    for reason, extensions in (excluded.items() if isinstance(excluded, Mapping) else ()):
        out += [{"extension": str(e), "eligible": False, "excluded_because": str(reason)}
                for e in extensions or ()]
    return out
