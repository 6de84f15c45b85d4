"""The live state of one agent: two independent axes plus reachability (research §7.3).

* ``presence`` is what the agent (or a policy acting for them) chose: ``logged_out``, ``ready`` or
  ``not_ready`` with a reason code (``break``, ``lunch``, ``rona``...).
* ``activity`` is what the system is doing with them: ``idle``, ``offered`` (an offer is ringing),
  ``connected``, ``held``, ``wrapup`` until a time, ``cooldown`` until a time (after a missed offer).
* ``reachable`` is SIP truth: a registration that answers OPTIONS.

An agent is *routable* when ready, reachable, enabled and idle. Wrap-up and cooldown are held by the
agent, not by a queue, so they block every queue the agent serves. The engine owns the transitions;
this module only holds the state and says, in words, why an agent cannot take a call now.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from helpline.queue.profile import AgentProfile

Presence = Literal["logged_out", "ready", "not_ready"]
Activity = Literal["idle", "offered", "connected", "held", "wrapup", "cooldown"]
PRESENCES: tuple[Presence, ...] = ("logged_out", "ready", "not_ready")
ON_CALL: frozenset[str] = frozenset({"connected", "held"})
TIMED: frozenset[str] = frozenset({"wrapup", "cooldown"})


@dataclass(slots=True)
class CallWork:
    """The call an agent is working on, kept until wrap-up ends so its handle time can be reported."""

    call_id: str
    queue: str
    connected_at: float
    hold_s: float = 0.0
    held_since: float | None = None
    ended_at: float | None = None
    wrapup_s: float = 0.0  # planned at call end

    def talk_s(self) -> float:
        end = self.ended_at if self.ended_at is not None else self.connected_at
        return max(0.0, end - self.connected_at - self.hold_s)


@dataclass(slots=True)
class AgentState:
    profile: AgentProfile
    presence: Presence = "logged_out"
    reason: str | None = None
    presence_since: float = 0.0
    activity: Activity = "idle"
    activity_since: float = 0.0
    until: float | None = None  # end of wrap-up or cooldown
    reachable: bool = False
    reachable_since: float = 0.0
    idle_since: float | None = None  # for longest-idle: later of last work end and becoming ready
    calls_answered: int = 0
    last_offer_at: float | None = None
    consecutive_misses: int = 0
    offer_id: str | None = None
    work: CallWork | None = None
    deferred: tuple[Presence, str | None] | None = None  # presence asked for during an offer
    routable_gen: int = -1  # engine stamp of the moment it last became routable
    tiers: dict[str, int] = field(default_factory=dict)  # queue -> tier

    @property
    def extension(self) -> str:
        return self.profile.extension

    @property
    def call_id(self) -> str | None:
        return self.work.call_id if self.work is not None and self.activity in ON_CALL | TIMED else None

    @property
    def routable(self) -> bool:
        return (
            self.presence == "ready" and self.reachable and self.activity == "idle" and self.profile.enabled
        )

    @property
    def staffed(self) -> bool:
        """Counted as staffing (for EWT and relaxation conditions): ready and reachable, any activity."""
        return self.presence == "ready" and self.reachable and self.profile.enabled

    def wrapup_for(self, queue_default: float) -> float:
        return self.profile.wrapup_s if self.profile.wrapup_s is not None else queue_default

    def exclusion(self, now: float) -> str | None:
        """Why this agent cannot take a call now (state only, not skills), or None if routable."""
        if not self.profile.enabled:
            return "disabled"
        if self.presence == "logged_out":
            return "presence logged_out"
        if self.presence == "not_ready":
            return f"presence not_ready ({self.reason})" if self.reason else "presence not_ready"
        if not self.reachable:
            return "unreachable"
        if self.activity == "offered":
            return "offered to another call"
        if self.activity == "connected":
            return "connected to a call"
        if self.activity == "held":
            return "holding a call"
        if self.activity in TIMED:
            left = (self.until or now) - now
            label = "wrap-up" if self.activity == "wrapup" else "cooldown"
            return f"{label} until +{left:.1f}s"
        return None

    def snapshot(self, now: float) -> dict[str, Any]:
        """The agent's state as every ``agent.*`` event carries it (occupancy is computed from these)."""
        return {
            "extension": self.extension,
            "presence": self.presence,
            "reason": self.reason,
            "activity": self.activity,
            "until": self.until,
            "reachable": self.reachable,
            "call_id": self.call_id,
            "offer_id": self.offer_id,
            "consecutive_misses": self.consecutive_misses,
        }
