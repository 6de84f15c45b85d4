"""Queue definitions and routing policies, as the operator writes them in the configuration file.

Queues live in the TOML configuration (``[queues.<name>]``); agents live in the database and are
managed through the API and the CLI. A policy is versioned by the hash of its content, so a decision
trace names the exact policy that made it, and a queued caller keeps the version it joined with.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

QUEUE_NAME = r"^[A-Za-z0-9_.-]{1,64}$"

# Why an agent does not count as "staffing" a queue for the join-empty and leave-when-empty rules
# (Asterisk's joinempty factors, renamed to our two-axis agent state).
EmptyFactor = Literal["logged_out", "not_ready", "unreachable", "busy", "wrapup"]

# Criteria of the agent score vector, compared in order; the last resort is a stable hash of
# (agent, call), so the decision never depends on list order.
ScoreCriterion = Literal[
    "tier", "proficiency", "longest_idle", "fewest_calls", "round_robin", "linear", "random"
]

# Conditions a relaxation step can wait for (besides ``after_s``).
StepCondition = Literal["no_eligible_staffed", "no_eligible_ready"]

MissCause = Literal["no_answer", "busy", "rejected", "unreachable"]


def _check_requirements(text: str | None) -> str | None:
    """Refuse a requirement expression that does not compile (the error names the column)."""
    if text:
        from helpline.queue.requirements import compile_requirements  # requirements -> profile -> here

        compile_requirements(text)
    return text


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RelaxationStep(_Strict):
    """One step of a queue's routing: it becomes active after ``after_s`` seconds of waiting, or as soon
    as ``when`` holds (whichever comes first when both are set), and then replaces the requirements and
    adds to the priority. The caller keeps their place: the entry's age is never reset.
    """

    after_s: float | None = Field(default=None, ge=0)
    when: StepCondition | None = None
    requirements: str | None = None  # None keeps the previous step's; "" means any member
    add_priority: int = Field(default=0, ge=-100, le=100)

    @field_validator("requirements")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        return _check_requirements(value)

    @model_validator(mode="after")
    def _has_trigger(self) -> RelaxationStep:
        if self.after_s is None and self.when is None:
            raise ValueError("a step needs after_s, when, or both")
        return self


class MissRule(_Strict):
    """What a missed offer costs the agent: a cooldown, and whether it counts toward not-ready."""

    cooldown_s: float = Field(default=10.0, ge=0)
    counts: bool = True


def _default_misses() -> dict[MissCause, MissRule]:
    return {
        "no_answer": MissRule(cooldown_s=10.0, counts=True),
        "busy": MissRule(cooldown_s=15.0, counts=False),
        "rejected": MissRule(cooldown_s=10.0, counts=True),
        "unreachable": MissRule(cooldown_s=30.0, counts=True),
    }


class RonaPolicy(_Strict):
    """Redirect-on-no-answer: per-cause cooldowns, then not ready (reason ``rona``) after N misses."""

    causes: dict[MissCause, MissRule] = Field(default_factory=_default_misses)
    not_ready_after: int = Field(default=3, ge=1, le=100)

    @field_validator("causes")
    @classmethod
    def _defaults_for_unlisted(cls, value: dict[MissCause, MissRule]) -> dict[MissCause, MissRule]:
        """A cause the operator did not list keeps its default rule, not a blank one."""
        return {**_default_misses(), **value}


class RoutingPolicy(_Strict):
    """How a queue orders its callers and chooses agents."""

    score: tuple[ScoreCriterion, ...] = ("tier", "proficiency", "longest_idle")
    ordering: Literal["strict_priority", "aged_priority"] = "strict_priority"
    # aged_priority: one priority point is worth this many seconds of waiting
    priority_step_s: float = Field(default=60.0, gt=0)
    steps: tuple[RelaxationStep, ...] = ()
    rona: RonaPolicy = Field(default_factory=RonaPolicy)
    random_seed: int = 0

    @field_validator("score")
    @classmethod
    def _score_not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("score needs at least one criterion")
        if len(set(value)) != len(value):
            raise ValueError("score lists a criterion twice")
        return value


class Announcements(_Strict):
    """Periodic position and estimated-wait announcements; they never delay an answer."""

    every_s: float = Field(default=30.0, ge=5)
    first_after_s: float = Field(default=10.0, ge=0)
    position: bool = True
    wait: bool = True
    max_position: int = Field(default=10, ge=1)  # beyond this, "more than N callers ahead"


class QueueConfig(_Strict):
    """One queue. ``requirements`` is the base skill expression (``spanish >= 3 and billing >= 2``)."""

    sl_threshold_s: float = Field(default=20.0, gt=0)
    short_abandon_s: float = Field(default=5.0, ge=0)
    max_length: int | None = Field(default=None, ge=1)
    wrapup_s: float = Field(default=10.0, ge=0, le=3600)
    ring_timeout_s: float = Field(default=15.0, gt=0, le=300)
    open: bool = True
    join_empty: tuple[EmptyFactor, ...] = ("logged_out", "unreachable")
    leave_empty: tuple[EmptyFactor, ...] = ()
    requirements: str = ""
    hold_prompt: tuple[str, ...] = ()  # prompt files or "tts:" texts; empty: the built-in hold tone
    announcements: Announcements = Field(default_factory=Announcements)
    exit_key: str | None = Field(default=None, pattern=r"^[0-9*#]$")
    policy: RoutingPolicy = Field(default_factory=RoutingPolicy)

    @field_validator("requirements")
    @classmethod
    def _compiles(cls, value: str) -> str:
        _check_requirements(value)
        return value

    @property
    def version(self) -> str:
        """A short content hash: the policy version written into every decision trace."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]
