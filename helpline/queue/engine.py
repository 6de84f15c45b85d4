"""The routing engine: pure decisions about who gets which caller, and every state change that follows.

No I/O, no asyncio, no clock: every method takes ``now`` (seconds on any monotonic or virtual clock)
and returns what happened as :class:`EngineEvent` values, so the same code runs live (the queue
runtime), in tests, in the simulator and in the bench. The runtime is its only owner and calls it
from one task, so nothing here locks.

Driving it
    Feed inputs (``upsert_agent``, ``set_presence``, ``set_reachable``, ``enqueue``, ``leave``,
    ``offer_result``, ``call_ended``, ``hold``), call :meth:`RoutingEngine.tick` when a timer may have
    expired (:meth:`next_deadline` says when) and :meth:`next_offers` after every input or tick, then
    dial each :class:`Offer` and report its outcome with ``offer_result``. :meth:`run` is tick +
    next_offers. Timers (wrap-up, cooldown, time steps, leave-when-empty) only take effect in
    ``tick``, so ``next_offers`` changes nothing but the agents and callers it offers.

Matching (research §7.4)
    Waiting callers are taken in one global order across all queues (``entries.py``). For each, the
    candidates are the members of its queue that are routable and meet its active requirements; the
    queue's score vector then the stable hash choose one (``scoring.py``). Greedy: an agent offered
    in a round is gone for the rest of it. Each decision carries a :class:`DecisionTrace` covering
    every member. To stay fast with thousands of callers, an entry remembers the generation at which
    no routable member qualified; it is re-examined only against agents that became routable since
    (each stamped with a new generation), or after its requirements change.

Requirements
    While no relaxation step has applied, a caller needs the queue's base ``requirements`` AND the
    enqueue node's requirements. A step whose ``requirements`` is not None replaces both with its
    own expression (write the whole relaxed rule; ``""`` means any member); ``None`` keeps the
    current ones. Steps apply in order: step i+1 only after step i.

Invariants (research D7), checked after every input on the agents and callers it touched, and in
full by :meth:`check_invariants` (which also reconciles with SIP truth): an agent is ``offered`` iff
exactly one live offer names it and it names that offer; a caller is ``offering`` iff a live offer
names it; ``connected``/``held`` agents have a call; ``wrapup``/``cooldown`` agents have an end
time; the routable index matches agent state. A violation is repaired and reported as an
``agent.invariant_repaired`` event, never raised.
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from helpline.queue.agent_state import ON_CALL, TIMED, Activity, AgentState, CallWork, Presence
from helpline.queue.config import EmptyFactor, MissCause, MissRule, QueueConfig, StepCondition
from helpline.queue.entries import EntryKey, Prediction, QueueEntry, order_key
from helpline.queue.ewt import Ewt, HandleTimes, estimate
from helpline.queue.profile import AgentProfile
from helpline.queue.requirements import Requirement, combine, compile_requirements
from helpline.queue.scoring import extension_key, json_value, score_value, tie_hash
from helpline.queue.trace import Candidate, DecisionTrace
from helpline.queue.views import agent_view, entry_view

log = logging.getLogger(__name__)

LeaveReason = Literal["answered", "abandoned", "timeout", "left", "transferred", "left_empty"]
OfferOutcome = Literal["answered", "cancelled", "no_answer", "busy", "rejected", "unreachable"]
MISS_CAUSES: frozenset[str] = frozenset({"no_answer", "busy", "rejected", "unreachable"})
MAX_PREDICTIONS = 64
MAX_TRIGGERS = 8


class UnknownAgent(KeyError):
    """An extension the engine does not know (never upserted, or removed)."""


@dataclass(frozen=True, slots=True)
class EngineEvent:
    type: str
    call_id: str | None
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Offer:
    """A decision to execute now: dial ``extension`` for ``call_id``, ringing ``ring_timeout_s``.

    ``events`` are the engine events of this decision (``agent.activity`` offered, ``queue.offer``
    with the trace) for the runtime to publish.
    """

    offer_id: str
    call_id: str
    extension: str
    queue: str
    trace: DecisionTrace
    ring_timeout_s: float
    data: Mapping[str, Any]
    events: tuple[EngineEvent, ...]


@dataclass(frozen=True, slots=True)
class JoinResult:
    """``joined`` (with the caller's position), ``full`` (max_length) or ``closed``.

    ``reason`` for ``closed``: ``closed`` (queue not open), ``empty`` (join-empty rule: no member who
    meets the caller's requirements, or those of a relaxation step still to come, counts as
    staffing given the queue's ``join_empty`` factors; an empty factor list turns the rule off),
    ``unknown_queue``.
    """

    outcome: Literal["joined", "full", "closed"]
    reason: str | None = None
    position: int | None = None


@dataclass(slots=True)
class _LiveOffer:
    offer_id: str
    call_id: str
    extension: str
    queue: str
    at: float


class _Queue:
    """One queue's indexes: members, waiting entries in order, routable members by generation."""

    def __init__(self, name: str, config: QueueConfig) -> None:
        self.name = name
        self.config = config
        self.base = compile_requirements(config.requirements)
        self.members: dict[str, int] = {}  # extension -> tier
        self._member_order: list[str] | None = None
        self.entries: list[tuple[EntryKey, QueueEntry]] = []
        self.routable: set[str] = set()
        self.log_gens: list[int] = []  # generations at which members became routable (ascending)
        self.log_exts: list[str] = []
        self.rr_last: str | None = None
        self.waiting = 0  # entries in state "queued"

    @property
    def member_order(self) -> list[str]:
        if self._member_order is None:
            self._member_order = sorted(self.members, key=extension_key)
        return self._member_order

    def set_member(self, extension: str, tier: int | None) -> None:
        if tier is None:
            if self.members.pop(extension, None) is not None:
                self._member_order = None
            self.routable.discard(extension)
        elif self.members.get(extension) != tier:
            self.members[extension] = tier
            self._member_order = None

    def became_routable(self, extension: str, gen: int) -> None:
        self.routable.add(extension)
        self.log_gens.append(gen)
        self.log_exts.append(extension)
        if len(self.log_gens) > 2 * len(self.routable) + 64:
            # keep the newest stamp of each agent still routable; older ones can never match again
            seen: set[str] = set()
            keep: list[tuple[int, str]] = []
            for g, e in zip(reversed(self.log_gens), reversed(self.log_exts), strict=True):
                if e in self.routable and e not in seen:
                    seen.add(e)
                    keep.append((g, e))
            keep.reverse()
            self.log_gens = [g for g, _ in keep]
            self.log_exts = [e for _, e in keep]

    def insert(self, entry: QueueEntry) -> None:
        bisect.insort(self.entries, (entry.key, entry), key=lambda item: item[0])

    def remove(self, entry: QueueEntry) -> None:
        i = bisect.bisect_left(self.entries, entry.key, key=lambda item: item[0])
        if i < len(self.entries) and self.entries[i][1] is entry:
            del self.entries[i]
        else:  # not where its key says: find it anyway
            self.entries = [item for item in self.entries if item[1] is not entry]


class RoutingEngine:
    """Agents, waiting callers and offers for a set of queues; see the module docstring."""

    def __init__(
        self,
        queues: Mapping[str, QueueConfig],
        *,
        aht_default_s: float = 180.0,
        aht_alpha: float = 0.2,
        stale_offer_grace_s: float = 30.0,
    ) -> None:
        self._queues: dict[str, _Queue] = {name: _Queue(name, cfg) for name, cfg in queues.items()}
        self._agents: dict[str, AgentState] = {}
        self._entries: dict[str, QueueEntry] = {}
        self._offers: dict[str, _LiveOffer] = {}
        self._routable: set[str] = set()
        self._timed: set[str] = set()
        self._memo: dict[str, dict[Requirement, bool]] = {}
        self._gen = 0
        self._seq = 0
        self._triggers: list[str] = []  # inputs since the last round of offers (for traces)
        self._traces: dict[str, DecisionTrace] = {}
        self._clock = 0.0
        self.handle_times = HandleTimes(aht_default_s, aht_alpha)
        self.stale_offer_grace_s = stale_offer_grace_s

    # ------------------------------------------------------------------ configuration

    @property
    def queue_names(self) -> list[str]:
        return sorted(self._queues)

    def queue_config(self, name: str) -> QueueConfig:
        return self._queues[name].config

    def configure(self, queues: Mapping[str, QueueConfig], now: float) -> list[EngineEvent]:
        """Apply a new queue set (config reload). Waiting callers keep their requirements and policy
        version; callers of a removed queue leave with reason ``left``."""
        self._see(now, "config.reload")
        events: list[EngineEvent] = []
        for name in [n for n in self._queues if n not in queues]:
            for _, entry in list(self._queues[name].entries):
                if entry.offer_id is not None:
                    events += self._cancel_offer(entry.offer_id, now, reason="queue_removed", requeue=False)
                events += self._remove_entry(entry, "left", now)
            del self._queues[name]
        for name, cfg in queues.items():
            old = self._queues.get(name)
            if old is None:
                self._queues[name] = _Queue(name, cfg)
            else:
                old.config = cfg
                old.base = compile_requirements(cfg.requirements)
        for agent in self._agents.values():
            self._index_membership(agent)
            self._restamp(agent)
        return events

    # ------------------------------------------------------------------ agents

    def upsert_agent(self, profile: AgentProfile, now: float) -> list[EngineEvent]:
        """Add an agent (logged out, unreachable) or update its profile; live state is kept."""
        self._see(now, f"agent.upsert {profile.extension}")
        agent = self._agents.get(profile.extension)
        if agent is None:
            agent = AgentState(profile, presence_since=now, activity_since=now, reachable_since=now)
            self._agents[profile.extension] = agent
        else:
            agent.profile = profile
        self._memo.pop(profile.extension, None)
        self._index_membership(agent)
        self._restamp(agent)
        return self._audit(now, agents=[agent])

    def remove_agent(self, extension: str, now: float) -> list[EngineEvent]:
        """Forget an agent. A ringing offer is cancelled (the caller goes back to waiting)."""
        agent = self._agent(extension)
        self._see(now, f"agent.remove {extension}")
        events: list[EngineEvent] = []
        if agent.offer_id is not None:
            events += self._cancel_offer(agent.offer_id, now, reason="agent_removed")
        if agent.work is not None and agent.activity in ON_CALL | TIMED:
            events.append(self._finish_work(agent, now))
        old = agent.presence
        agent.presence, agent.reason, agent.presence_since = "logged_out", None, now
        events.append(self._agent_event("agent.presence", agent, now, previous=old, removed=True))
        for q in list(agent.tiers):
            self._queues[q].set_member(extension, None)
        self._routable.discard(extension)
        self._timed.discard(extension)
        self._memo.pop(extension, None)
        del self._agents[extension]
        events += self._conditions_for(list(agent.tiers), now)
        return events

    def set_presence(
        self, extension: str, presence: Presence, reason: str | None, now: float
    ) -> list[EngineEvent]:
        """A manual presence change. During an offer it is deferred to the offer's outcome."""
        agent = self._agent(extension)
        self._see(now, f"agent.presence {extension} {presence}")
        reason = reason if presence == "not_ready" else None
        if agent.activity == "offered":
            agent.deferred = (presence, reason)
            return [
                self._agent_event(
                    "agent.presence",
                    agent,
                    now,
                    deferred=True,
                    requested={"presence": presence, "reason": reason},
                )
            ]
        events = self._apply_presence(agent, presence, reason, now, manual=True)
        return events + self._audit(now, agents=[agent])

    def set_reachable(self, extension: str, reachable: bool, now: float) -> list[EngineEvent]:
        """SIP truth: a registration that answers (or stopped answering) OPTIONS."""
        agent = self._agent(extension)
        self._see(now, f"agent.reachable {extension} {reachable}")
        if agent.reachable == reachable:
            return []
        agent.reachable, agent.reachable_since = reachable, now
        self._sync(agent)
        events = [self._agent_event("agent.reachable", agent, now)]
        if not reachable:
            events += self._conditions_for(list(agent.tiers), now)
        return events + self._audit(now, agents=[agent])

    # ------------------------------------------------------------------ callers

    def enqueue(
        self,
        call_id: str,
        queue: str,
        *,
        priority: int,
        requirements: str | None,
        data: Mapping[str, Any],
        now: float,
        virtual_start: float | None = None,
    ) -> tuple[JoinResult, list[EngineEvent]]:
        """A caller asks to wait in ``queue``. Raises RequirementError for a bad expression and
        ValueError for a call that is already waiting somewhere."""
        self._see(now, f"queue.join {call_id}")
        if call_id in self._entries:
            raise ValueError(f"call {call_id} is already waiting in queue {self._entries[call_id].queue}")
        node_req = compile_requirements(requirements or "")
        refusal = self._join_refusal(queue, node_req)
        if refusal is not None:
            return self._refuse(call_id, queue, *refusal)
        qs = self._queues[queue]
        cfg = qs.config
        active = combine([node_req, qs.base])
        self._seq += 1
        entry = QueueEntry(
            seq=self._seq, call_id=call_id, queue=queue, base_priority=priority, priority=priority,
            joined_at=now, virtual_start=now if virtual_start is None else min(virtual_start, now),
            node_requirements=node_req, requirements=active, policy_version=cfg.version, data=dict(data),
            step_entered_at=now,
        )  # fmt: skip
        entry.key = order_key(entry, cfg)
        qs.insert(entry)
        qs.waiting += 1
        self._entries[call_id] = entry
        events = [
            EngineEvent("queue.joined", call_id, {
                "queue": queue, "priority": priority, "requirements": active.text,
                "policy_version": cfg.version, "age_s": round(entry.age(now), 3), "data": dict(data),
            })
        ]  # fmt: skip
        events += self._advance_steps(entry, now, {})
        position = self.position(call_id)
        events[0].data["position"] = position
        return JoinResult("joined", None, position), events + self._audit(now, entries=[entry])

    def join_refusal(self, queue: str, requirements: str | None = None) -> str | None:
        """Why a caller with ``requirements`` could not join ``queue`` now (``closed``, ``full``,
        ``empty``, ``unknown_queue``), or None if they could; changes nothing. The runtime asks before
        it accepts an agent's transfer to a queue."""
        refusal = self._join_refusal(queue, compile_requirements(requirements or ""))
        return None if refusal is None else refusal[1]

    def _join_refusal(
        self, queue: str, node_req: Requirement
    ) -> tuple[Literal["full", "closed"], str] | None:
        """The join rules, in order: the outcome and reason of a refusal, or None."""
        qs = self._queues.get(queue)
        if qs is None:
            return "closed", "unknown_queue"
        cfg = qs.config
        if not cfg.open:
            return "closed", "closed"
        if cfg.max_length is not None and len(qs.entries) >= cfg.max_length:
            return "full", "full"
        if not self._could_staff(qs, combine([node_req, qs.base]), -1, cfg.join_empty):
            return "closed", "empty"
        return None

    def leave(self, call_id: str, reason: LeaveReason, now: float) -> list[EngineEvent]:
        """The caller stops waiting (hung up, timed out, pressed the exit key...). A ringing offer is
        cancelled and its agent freed without penalty. Unknown or already-connected calls: no-op."""
        self._see(now, f"queue.leave {call_id} {reason}")
        entry = self._entries.get(call_id)
        if entry is None:
            return []
        events: list[EngineEvent] = []
        agent = (
            self._agents.get(self._offers[entry.offer_id].extension)
            if entry.offer_id in self._offers
            else None
        )
        if entry.offer_id is not None:
            events += self._cancel_offer(entry.offer_id, now, reason="caller_left", requeue=False)
        events += self._remove_entry(entry, reason, now)
        return events + self._audit(now, agents=[agent] if agent is not None else [])

    # ------------------------------------------------------------------ offers

    def next_offers(self, now: float) -> list[Offer]:
        """Every offer to make now. The chosen agents become ``offered``, their callers ``offering``."""
        self._clock = max(self._clock, now)
        offers: list[Offer] = []
        lists = [qs.entries for qs in self._queues.values() if qs.routable and qs.waiting]
        if not lists:
            self._triggers.clear()
            return offers
        stream: Iterable[tuple[EntryKey, QueueEntry]] = (
            lists[0] if len(lists) == 1 else heapq.merge(*lists, key=lambda item: item[0])
        )
        for _, entry in stream:
            if entry.state != "queued":
                continue
            qs = self._queues[entry.queue]
            if not qs.routable or not self._has_new_candidate(qs, entry):
                continue
            offers.append(self._offer(qs, entry, now))
            if not self._routable:
                break
        self._triggers.clear()
        return offers

    def run(self, now: float) -> tuple[list[EngineEvent], list[Offer]]:
        """``tick(now)`` then ``next_offers(now)``: what a runtime does on every wake-up."""
        return self.tick(now), self.next_offers(now)

    def offer_pending(self, offer_id: str) -> bool:
        """Whether the offer still waits for its result (the caller leaving closes it too)."""
        return offer_id in self._offers

    def offer_result(self, offer_id: str, outcome: OfferOutcome, now: float) -> list[EngineEvent]:
        """How an offer ended: answered, cancelled (caller left, or runtime gave up), or a miss."""
        if outcome != "answered" and outcome != "cancelled" and outcome not in MISS_CAUSES:
            raise ValueError(f"unknown offer outcome {outcome!r}")
        self._see(now, f"offer.{outcome} {offer_id}")
        live = self._offers.get(offer_id)
        if live is None:
            log.warning("result %s for unknown or finished offer %s", outcome, offer_id)
            return []
        if outcome == "cancelled":
            return self._cancel_offer(offer_id, now, reason="cancelled")
        del self._offers[offer_id]
        agent = self._agents.get(live.extension)
        entry = self._entries.get(live.call_id)
        events: list[EngineEvent] = []
        ring_s = round(now - live.at, 3)
        events.append(EngineEvent("queue.offer_result", live.call_id, {
            "offer_id": offer_id, "extension": live.extension, "queue": live.queue, "outcome": outcome,
            "ring_s": ring_s,
        }))  # fmt: skip
        if outcome == "answered":
            if entry is not None and entry.offer_id == offer_id:
                entry.offer_id = None
                events += self._remove_entry(entry, "answered", now, extension=live.extension)
            if agent is not None:
                agent.offer_id, agent.calls_answered, agent.consecutive_misses = (
                    None,
                    agent.calls_answered + 1,
                    0,
                )
                agent.work = CallWork(live.call_id, live.queue, now)
                events.append(self._set_activity(agent, "connected", now, call_id=live.call_id))
        else:
            if entry is not None and entry.offer_id == offer_id:
                self._requeue(entry)
            if agent is not None:
                agent.offer_id = None
                events += self._miss(agent, live, outcome, now)
        if agent is not None:
            events += self._apply_deferred(agent, now)
        touched_agents = [agent] if agent is not None else []
        touched_entries = [entry] if entry is not None and entry.call_id in self._entries else []
        return events + self._audit(now, agents=touched_agents, entries=touched_entries)

    def call_ended(self, extension: str, now: float) -> list[EngineEvent]:
        """The agent's call ended: wrap-up (agent override, else the call's queue default), all queues."""
        agent = self._agent(extension)
        self._see(now, f"agent.call_ended {extension}")
        work = agent.work
        if agent.activity not in ON_CALL or work is None:
            log.warning("call_ended for %s, who is %s", extension, agent.activity)
            return []
        if work.held_since is not None:
            work.hold_s += now - work.held_since
            work.held_since = None
        work.ended_at = now
        qs = self._queues.get(work.queue)
        wrapup = agent.wrapup_for(qs.config.wrapup_s if qs is not None else 0.0)
        work.wrapup_s = wrapup
        self.handle_times.observe(work.queue, work.talk_s() + work.hold_s + wrapup)
        if wrapup > 0:
            talk, held = round(work.talk_s(), 3), round(work.hold_s, 3)
            until = now + wrapup
            events = [self._set_activity(agent, "wrapup", now, until=until, talk_s=talk, hold_s=held)]
        else:
            events = [self._finish_work(agent, now)]
        return events + self._audit(now, agents=[agent])

    def hold(self, extension: str, held: bool, now: float) -> list[EngineEvent]:
        agent = self._agent(extension)
        self._see(now, f"agent.hold {extension} {held}")
        work = agent.work
        if work is None or agent.activity not in ON_CALL or (agent.activity == "held") == held:
            return []
        if held:
            work.held_since = now
        elif work.held_since is not None:
            work.hold_s += now - work.held_since
            work.held_since = None
        return [self._set_activity(agent, "held" if held else "connected", now, call_id=work.call_id)]

    # ------------------------------------------------------------------ timers

    def tick(self, now: float) -> list[EngineEvent]:
        """Expire wrap-ups and cooldowns, apply due relaxation steps, apply leave-when-empty."""
        self._see(now, None)
        events: list[EngineEvent] = []
        for ext in sorted(self._timed, key=extension_key):
            agent = self._agents[ext]
            if agent.until is not None and agent.until <= now:
                self._see(now, f"{agent.activity} ended {ext}")
                if agent.activity == "wrapup":
                    events.append(self._finish_work(agent, now))
                else:
                    events.append(self._set_activity(agent, "idle", now))
                events += self._audit(now, agents=[agent])
        cache: dict[tuple[str, Requirement, str], bool] = {}
        for entry in self._ordered_entries():
            stepped = self._advance_steps(entry, now, cache)
            if stepped:
                self._see(now, f"step {entry.call_id}")
                events += stepped
        for qs in self._queues.values():
            factors = qs.config.leave_empty
            if not factors:
                continue
            for _, entry in list(qs.entries):
                if entry.state != "queued":
                    continue
                key = (qs.name, entry.requirements, f"leave_empty:{entry.step_index}")
                if key not in cache:
                    cache[key] = self._could_staff(qs, entry.requirements, entry.step_index, factors)
                if not cache[key]:
                    events += self._remove_entry(entry, "left_empty", now)
        return events

    def next_deadline(self) -> float | None:
        """The earliest time at which ``tick`` has something to do (None: nothing timed pending)."""
        times = [self._agents[e].until for e in self._timed]
        deadline = min((t for t in times if t is not None), default=None)
        for entry in self._entries.values():
            steps = self._queues[entry.queue].config.policy.steps
            nxt = entry.step_index + 1
            if nxt < len(steps) and steps[nxt].after_s is not None:
                due = entry.joined_at + float(steps[nxt].after_s or 0.0)
                deadline = due if deadline is None else min(deadline, due)
        return deadline

    # ------------------------------------------------------------------ invariants

    def check_invariants(self, now: float, *, live_calls: set[str]) -> list[EngineEvent]:
        """Full check and repair, plus reconciliation with SIP truth: an agent connected to a call that
        ``live_calls`` does not list goes to wrap-up; an offer older than twice its queue's ring
        timeout plus ``stale_offer_grace_s`` is dropped and its agent freed."""
        self._see(now, "invariant check")
        events: list[EngineEvent] = []
        for offer in sorted(self._offers.values(), key=lambda o: o.offer_id):
            qs = self._queues.get(offer.queue)
            limit = 2 * (qs.config.ring_timeout_s if qs is not None else 60.0) + self.stale_offer_grace_s
            if now - offer.at > limit:
                events.append(self._repaired("stale offer", "offer dropped, agent freed", now,
                                             extension=offer.extension, call_id=offer.call_id))  # fmt: skip
                events += self._cancel_offer(offer.offer_id, now, reason="stale")
        for ext in sorted(self._agents, key=extension_key):
            agent = self._agents[ext]
            if agent.activity in ON_CALL and agent.call_id is not None and agent.call_id not in live_calls:
                events.append(self._repaired("connected to a live call", "call gone: wrap-up", now,
                                             extension=ext, call_id=agent.call_id))  # fmt: skip
                events += self.call_ended(ext, now)
        events += self._audit(now, agents=list(self._agents.values()), entries=list(self._entries.values()),
                              offers=True)  # fmt: skip
        return events

    # ------------------------------------------------------------------ views

    def position(self, call_id: str) -> int | None:
        """Rank among waiting callers competing for the same eligible agents (1 = next); see ewt.py."""
        entry = self._entries.get(call_id)
        if entry is None:
            return None
        return self._position(entry, self._pool(entry))

    def ewt(self, call_id: str, now: float) -> Ewt | None:
        """Estimated wait (ewt.py) for a waiting caller; the prediction is kept for its accuracy report.
        None if the call is not waiting. ``p50_s``/``p90_s`` are None when nobody staffed qualifies."""
        entry = self._entries.get(call_id)
        if entry is None:
            return None
        pool = self._pool(entry)
        position = self._position(entry, pool)
        n_eff = 0.0
        idle = 0
        for agent in pool:
            busy_queues = sum(1 for q in agent.tiers if self._queues[q].waiting)
            n_eff += 1.0 / max(1, busy_queues)
            idle += agent.routable
        result = estimate(position, n_eff, idle, self.handle_times.get(entry.queue))
        if len(entry.predictions) < MAX_PREDICTIONS:
            entry.predictions.append(Prediction(now, position, result.p50_s, result.p90_s))
        return result

    def last_trace(self, call_id: str) -> DecisionTrace | None:
        """For a waiting caller: the last offer's trace while it rings, else a fresh evaluation
        (``chosen`` None) showing why each member is excluded now. None once the caller has left
        the queue (the ``queue.offer`` events in the log keep every trace)."""
        entry = self._entries.get(call_id)
        if entry is not None and entry.state == "queued":
            qs = self._queues[entry.queue]
            candidates, _ = self._evaluate(qs, entry, self._clock)
            trace = self._trace(qs, entry, self._clock, f"{call_id}.query", candidates, None, None)
            return dataclasses.replace(trace, trigger="query")
        return self._traces.get(call_id)

    def why_not(self, call_id: str, extension: str) -> str | None:
        """Why ``extension`` does not (or did not) get ``call_id``; None if it did."""
        trace = self.last_trace(call_id)
        return None if trace is None else trace.why_not(extension)

    def agent_view(self, extension: str, now: float) -> dict[str, Any]:
        return agent_view(self._agent(extension), now)

    def agents(self, now: float) -> list[dict[str, Any]]:
        return [agent_view(self._agents[e], now) for e in sorted(self._agents, key=extension_key)]

    def queue_view(self, name: str, now: float) -> dict[str, Any]:
        qs = self._queues[name]
        waiting = [entry_view(e, rank, now) for rank, (_, e) in enumerate(qs.entries, start=1)]
        by_state: dict[str, int] = {}
        members = []
        for ext in qs.member_order:
            agent = self._agents[ext]
            label = agent.presence if agent.presence != "ready" else f"ready_{agent.activity}"
            if agent.presence == "ready" and not agent.reachable:
                label = "ready_unreachable"
            by_state[label] = by_state.get(label, 0) + 1
            members.append({
                "extension": ext, "tier": qs.members[ext], "presence": agent.presence, "reason": agent.reason,
                "activity": agent.activity, "reachable": agent.reachable,
            })  # fmt: skip
        longest = max((e.wait(now) for _, e in qs.entries), default=0.0)
        return {
            "name": name, "open": qs.config.open, "policy_version": qs.config.version,
            "requirements": qs.base.text,
            "counts": {"waiting": qs.waiting, "offering": len(qs.entries) - qs.waiting,
                       "members": len(qs.members), "routable": len(qs.routable),
                       "staffed": sum(1 for e in qs.members if self._agents[e].staffed)},
            "longest_wait_s": round(longest, 3), "aht_s": round(self.handle_times.get(name), 1),
            "waiting": waiting, "agents": {"by_state": by_state, "members": members},
        }  # fmt: skip

    def queues(self, now: float) -> list[dict[str, Any]]:
        """Every queue's view without its waiting list and members (the summary table)."""
        out = []
        for name in self.queue_names:
            view = self.queue_view(name, now)
            del view["waiting"]
            view["agents"] = {"by_state": view["agents"]["by_state"]}
            out.append(view)
        return out

    def agent_extensions(self) -> set[str]:
        return set(self._agents)

    def waiting_calls(self) -> list[str]:
        return [e.call_id for e in self._ordered_entries()]

    # ================================================================== internals

    def _see(self, now: float, trigger: str | None) -> None:
        self._clock = max(self._clock, now)
        if trigger is not None:
            if len(self._triggers) >= MAX_TRIGGERS:
                del self._triggers[1 : -(MAX_TRIGGERS // 2)]
                self._triggers[0] = "..."
            self._triggers.append(trigger)

    @property
    def _trigger(self) -> str:
        return ", ".join(self._triggers) or "retry"

    def _agent(self, extension: str) -> AgentState:
        agent = self._agents.get(extension)
        if agent is None:
            raise UnknownAgent(f"unknown agent {extension!r}")
        return agent

    def _ordered_entries(self) -> list[QueueEntry]:
        lists = [qs.entries for qs in self._queues.values() if qs.entries]
        return [e for _, e in heapq.merge(*lists, key=lambda item: item[0])]

    def _eligible(self, agent: AgentState, requirement: Requirement) -> bool:
        memo = self._memo.get(agent.extension)
        if memo is None:
            memo = self._memo[agent.extension] = {}
        result = memo.get(requirement)
        if result is None:
            if len(memo) > 4096:
                memo.clear()
            result = memo[requirement] = requirement.evaluate(agent.profile.skills, agent.profile.attributes)
        return result

    def _index_membership(self, agent: AgentState) -> None:
        wanted = {m.queue: m.tier for m in agent.profile.queues if m.queue in self._queues}
        for m in agent.profile.queues:
            if m.queue not in self._queues:
                log.warning("agent %s is a member of unknown queue %s", agent.extension, m.queue)
        for q in list(agent.tiers):
            if q not in wanted and q in self._queues:
                self._queues[q].set_member(agent.extension, None)
        for q, tier in wanted.items():
            self._queues[q].set_member(agent.extension, tier)
        agent.tiers = wanted

    def _restamp(self, agent: AgentState) -> None:
        """Re-announce a routable agent whose skills or queues changed, so waiting callers look again."""
        self._routable.discard(agent.extension)
        for qs in self._queues.values():
            qs.routable.discard(agent.extension)
        self._sync(agent)

    def _sync(self, agent: AgentState) -> None:
        """Keep the routable indexes in step with the agent's state."""
        ext = agent.extension
        was, now_routable = ext in self._routable, agent.routable
        if now_routable and not was:
            self._gen += 1
            agent.routable_gen = self._gen
            self._routable.add(ext)
            for q in agent.tiers:
                self._queues[q].became_routable(ext, self._gen)
        elif was and not now_routable:
            agent.routable_gen = -1
            self._routable.discard(ext)
            for q in agent.tiers:
                self._queues[q].routable.discard(ext)
        if agent.activity in TIMED:
            self._timed.add(ext)
        else:
            self._timed.discard(ext)

    def _agent_event(self, kind: str, agent: AgentState, now: float, **data: Any) -> EngineEvent:
        """``agent.*`` events are not call events (``call_id`` None; the call, if any, is in data)."""
        return EngineEvent(kind, None, {**agent.snapshot(now), **data})

    def _set_activity(
        self, agent: AgentState, activity: Activity, now: float, *, until: float | None = None, **data: Any
    ) -> EngineEvent:
        previous = agent.activity
        agent.activity, agent.activity_since, agent.until = activity, now, until
        if activity == "idle":
            agent.work = None
        self._sync(agent)
        return self._agent_event("agent.activity", agent, now, previous=previous, **data)

    def _finish_work(self, agent: AgentState, now: float) -> EngineEvent:
        """End of wrap-up (or of a call without wrap-up): idle, with the handled call's durations."""
        work = agent.work
        handled = None
        if work is not None:
            ended = work.ended_at if work.ended_at is not None else now
            handled = {
                "call_id": work.call_id, "queue": work.queue, "talk_s": round(work.talk_s(), 3),
                "hold_s": round(work.hold_s, 3), "wrapup_s": round(max(0.0, now - ended), 3),
            }  # fmt: skip
        if agent.presence == "ready":
            agent.idle_since = now
        agent.work = None
        return self._set_activity(agent, "idle", now, handled=handled)

    def _apply_presence(
        self,
        agent: AgentState,
        presence: Presence,
        reason: str | None,
        now: float,
        *,
        manual: bool,
        **data: Any,
    ) -> list[EngineEvent]:
        if manual:
            agent.consecutive_misses = 0
        if agent.presence == presence and agent.reason == reason:
            return []
        previous = agent.presence
        agent.presence, agent.reason, agent.presence_since = presence, reason, now
        if presence == "ready" and previous != "ready":
            agent.idle_since = now if agent.activity == "idle" else agent.idle_since
        self._sync(agent)
        events = [self._agent_event("agent.presence", agent, now, previous=previous, **data)]
        if presence != "ready":
            events += self._conditions_for(list(agent.tiers), now)
        return events

    def _apply_deferred(self, agent: AgentState, now: float) -> list[EngineEvent]:
        if agent.deferred is None:
            return []
        presence, reason = agent.deferred
        agent.deferred = None
        return self._apply_presence(agent, presence, reason, now, manual=True, applied_deferred=True)

    def _miss(self, agent: AgentState, live: _LiveOffer, cause: MissCause, now: float) -> list[EngineEvent]:
        qs = self._queues.get(live.queue)
        rona = qs.config.policy.rona if qs is not None else None
        rule = rona.causes.get(cause, MissRule()) if rona is not None else MissRule()
        events: list[EngineEvent] = []
        if rule.counts:
            agent.consecutive_misses += 1
        missed: dict[str, Any] = {"cause": cause, "offer_call_id": live.call_id, "offer_id": live.offer_id}
        if rule.cooldown_s > 0:
            events.append(self._set_activity(agent, "cooldown", now, until=now + rule.cooldown_s, **missed))
        else:
            events.append(self._set_activity(agent, "idle", now, **missed))
        limit = rona.not_ready_after if rona is not None else None
        if (
            limit is not None
            and rule.counts
            and agent.consecutive_misses >= limit
            and agent.presence == "ready"
        ):
            misses = agent.consecutive_misses
            events += self._apply_presence(agent, "not_ready", "rona", now, manual=False, misses=misses)
        return events

    def _requeue(self, entry: QueueEntry) -> None:
        entry.offer_id, entry.state, entry.checked_gen = None, "queued", -1
        self._queues[entry.queue].waiting += 1

    def _cancel_offer(
        self, offer_id: str, now: float, *, reason: str, requeue: bool = True
    ) -> list[EngineEvent]:
        """End a live offer without penalty: agent back to idle, caller back to waiting (if requeue)."""
        live = self._offers.pop(offer_id, None)
        if live is None:
            return []
        events = [EngineEvent("queue.offer_result", live.call_id, {
            "offer_id": offer_id, "extension": live.extension, "queue": live.queue, "outcome": "cancelled",
            "reason": reason, "ring_s": round(now - live.at, 3),
        })]  # fmt: skip
        entry = self._entries.get(live.call_id)
        if entry is not None and entry.offer_id == offer_id:
            if requeue:
                self._requeue(entry)
            else:
                entry.offer_id, entry.state = None, "queued"
                self._queues[entry.queue].waiting += 1
        agent = self._agents.get(live.extension)
        if agent is not None and agent.offer_id == offer_id:
            agent.offer_id = None
            freed: dict[str, Any] = {
                "cause": "cancelled",
                "offer_call_id": live.call_id,
                "offer_id": live.offer_id,
            }
            events.append(self._set_activity(agent, "idle", now, **freed))
            events += self._apply_deferred(agent, now)
        return events

    def _refuse(
        self, call_id: str, queue: str, outcome: Literal["full", "closed"], reason: str
    ) -> tuple[JoinResult, list[EngineEvent]]:
        event = EngineEvent("queue.refused", call_id, {"queue": queue, "outcome": outcome, "reason": reason})
        return JoinResult(outcome, reason), [event]

    def _remove_entry(
        self, entry: QueueEntry, reason: LeaveReason, now: float, *, extension: str | None = None
    ) -> list[EngineEvent]:
        qs = self._queues[entry.queue]
        qs.remove(entry)
        if entry.state == "queued":
            qs.waiting -= 1
        self._entries.pop(entry.call_id, None)
        self._traces.pop(entry.call_id, None)  # kept in the event log (queue.offer), not here
        wait = round(entry.wait(now), 3)
        events: list[EngineEvent] = []
        if reason == "answered":
            events.append(EngineEvent("queue.connected", entry.call_id, {
                "queue": entry.queue, "extension": extension, "wait_s": wait,
                "age_s": round(entry.age(now), 3), "attempts": entry.attempts, "step": entry.step_index,
            }))  # fmt: skip
        left: dict[str, Any] = {
            "queue": entry.queue,
            "reason": reason,
            "wait_s": wait,
            "age_s": round(entry.age(now), 3),
            "short_abandon": reason == "abandoned" and wait < qs.config.short_abandon_s,
            "attempts": entry.attempts,
            "step": entry.step_index,
        }
        if reason != "answered":
            _, eligible = self._evaluate(qs, entry, now)
            left["eligible_members_at_exit"] = len(eligible)
        events.append(EngineEvent("queue.left", entry.call_id, left))
        if entry.predictions:
            events.append(EngineEvent("queue.ewt_outcome", entry.call_id, {
                "queue": entry.queue, "reason": reason, "censored": reason != "answered",
                "predictions": [
                    {"at": p.at, "position": p.position, "p50_s": p.p50_s, "p90_s": p.p90_s,
                     "realised_s": round(now - p.at, 3)}
                    for p in entry.predictions
                ],
            }))  # fmt: skip
        return events

    # ------------------------------------------------------------------ matching

    def _has_new_candidate(self, qs: _Queue, entry: QueueEntry) -> bool:
        """Does any member that became routable after the entry's last failed look qualify?"""
        gens = qs.log_gens
        if not gens or gens[-1] <= entry.checked_gen:
            return False
        start = bisect.bisect_right(gens, entry.checked_gen)
        exts = qs.log_exts
        agents = self._agents
        req = entry.requirements
        for i in range(start, len(gens)):
            agent = agents.get(exts[i])
            if agent is None or agent.routable_gen != gens[i] or exts[i] not in qs.routable:
                continue
            if self._eligible(agent, req):
                return True
        entry.checked_gen = self._gen
        return False

    def _evaluate(
        self, qs: _Queue, entry: QueueEntry, now: float
    ) -> tuple[list[Candidate], list[AgentState]]:
        """Every member of the entry's queue, eligible or why not (state first, then requirements)."""
        candidates: list[Candidate] = []
        eligible: list[AgentState] = []
        req = entry.requirements
        for ext in qs.member_order:
            agent = self._agents[ext]
            reason = agent.exclusion(now)
            if reason is None and not self._eligible(agent, req):
                reason = "requirements: " + (
                    req.explain(agent.profile.skills, agent.profile.attributes) or ""
                )
            if reason is None:
                eligible.append(agent)
                candidates.append(Candidate(ext, True))
            else:
                candidates.append(Candidate(ext, False, reason))
        return candidates, eligible

    def _offer(self, qs: _Queue, entry: QueueEntry, now: float) -> Offer:
        candidates, eligible = self._evaluate(qs, entry, now)
        policy = qs.config.policy
        scored: list[tuple[tuple[Any, ...], int, AgentState]] = []
        for agent in eligible:
            vector = tuple(
                score_value(c, agent, queue=qs.name, call_id=entry.call_id, requirements=entry.requirements,
                            rr_last=qs.rr_last, seed=policy.random_seed)
                for c in policy.score
            )  # fmt: skip
            scored.append((vector, tie_hash(agent.extension, entry.call_id), agent))
        scored.sort(key=lambda item: (item[0], item[1]))
        best_vector, _, chosen = scored[0]
        tie_break = "hash" if len(scored) > 1 and scored[1][0] == best_vector else "score"
        scores = {agent.extension: dict(zip(policy.score, map(json_value, vec), strict=True))
                  for vec, _, agent in scored}  # fmt: skip
        candidates = [
            Candidate(c.extension, True, None, scores[c.extension]) if c.eligible else c for c in candidates
        ]
        entry.attempts += 1
        offer_id = f"{entry.call_id}.{entry.attempts}"
        trace = self._trace(qs, entry, now, offer_id, candidates, chosen.extension, tie_break)
        self._traces[entry.call_id] = trace
        # state changes
        entry.state, entry.offer_id = "offering", offer_id
        qs.waiting -= 1
        qs.rr_last = chosen.extension
        chosen.offer_id, chosen.last_offer_at = offer_id, now
        self._offers[offer_id] = _LiveOffer(offer_id, entry.call_id, chosen.extension, qs.name, now)
        activity = self._set_activity(chosen, "offered", now, call_id=entry.call_id)
        offer_event = EngineEvent("queue.offer", entry.call_id, {
            "offer_id": offer_id, "queue": qs.name, "extension": chosen.extension, "attempt": entry.attempts,
            "wait_s": round(entry.wait(now), 3), "trace": trace.to_dict(),
        })  # fmt: skip
        return Offer(offer_id, entry.call_id, chosen.extension, qs.name, trace, qs.config.ring_timeout_s,
                     dict(entry.data), (activity, offer_event))  # fmt: skip

    def _trace(
        self, qs: _Queue, entry: QueueEntry, now: float, decision_id: str, candidates: list[Candidate],
        chosen: str | None, tie_break: str | None,
    ) -> DecisionTrace:  # fmt: skip
        return DecisionTrace(
            decision_id=decision_id, at=now, trigger=self._trigger, call_id=entry.call_id, queue=qs.name,
            priority=entry.priority, age_s=entry.age(now), wait_s=entry.wait(now), step=entry.step_index,
            requirements=entry.requirements.text, policy_version=entry.policy_version,
            score_order=tuple(qs.config.policy.score), candidates=tuple(candidates), chosen=chosen,
            tie_break=tie_break,
        )  # fmt: skip

    # ------------------------------------------------------------------ steps and staffing

    def _staffed(self, qs: _Queue, requirement: Requirement, factors: tuple[EmptyFactor, ...]) -> bool:
        """Does any member who meets ``requirement`` count as staffing, given the excluding factors?"""
        for ext in qs.members:
            agent = self._agents[ext]
            if not self._eligible(agent, requirement):
                continue
            if "logged_out" in factors and (agent.presence == "logged_out" or not agent.profile.enabled):
                continue
            if "not_ready" in factors and agent.presence == "not_ready":
                continue
            if "unreachable" in factors and not agent.reachable:
                continue
            if "busy" in factors and agent.activity in ("offered", "connected", "held"):
                continue
            if "wrapup" in factors and agent.activity == "wrapup":
                continue
            return True
        return False

    def _could_staff(
        self, qs: _Queue, requirement: Requirement, step_index: int, factors: tuple[EmptyFactor, ...]
    ) -> bool:
        """Join/leave-when-empty: is some member staffing for the current requirements or for those
        of a relaxation step still to come (a caller who will be relaxed is not stranded)? No
        factors: the rule is off."""
        if not factors or self._staffed(qs, requirement, factors):
            return True
        later = qs.config.policy.steps[step_index + 1 :]
        return any(
            self._staffed(qs, compile_requirements(step.requirements), factors)
            for step in later
            if step.requirements is not None
        )

    def _condition(self, qs: _Queue, requirement: Requirement, when: StepCondition) -> bool:
        for ext in qs.members:
            agent = self._agents[ext]
            ok = agent.staffed if when == "no_eligible_staffed" else agent.routable
            if ok and self._eligible(agent, requirement):
                return False
        return True

    def _advance_steps(
        self, entry: QueueEntry, now: float, cache: dict[tuple[str, Requirement, str], bool]
    ) -> list[EngineEvent]:
        qs = self._queues[entry.queue]
        steps = qs.config.policy.steps
        events: list[EngineEvent] = []
        while entry.step_index + 1 < len(steps):
            step = steps[entry.step_index + 1]
            cause: str | None = None
            if step.after_s is not None and now - entry.joined_at >= step.after_s:
                cause = "time"
            elif step.when is not None and entry.state == "queued":
                key = (qs.name, entry.requirements, step.when)
                if key not in cache:
                    cache[key] = self._condition(qs, entry.requirements, step.when)
                if cache[key]:
                    cause = step.when
            if cause is None:
                break
            qs.remove(entry)
            entry.step_index += 1
            entry.step_entered_at = now
            if step.requirements is not None:
                entry.requirements = compile_requirements(step.requirements)
            entry.priority += step.add_priority
            entry.key = order_key(entry, qs.config)
            entry.checked_gen = -1
            qs.insert(entry)
            events.append(EngineEvent("queue.step", entry.call_id, {
                "queue": qs.name, "step": entry.step_index, "cause": cause,
                "requirements": entry.requirements.text, "priority": entry.priority,
                "wait_s": round(entry.wait(now), 3),
            }))  # fmt: skip
        return events

    def _conditions_for(self, queues: list[str], now: float) -> list[EngineEvent]:
        """Condition steps of the callers in ``queues`` (an agent there stopped being available)."""
        events: list[EngineEvent] = []
        cache: dict[tuple[str, Requirement, str], bool] = {}
        for q in queues:
            qs = self._queues.get(q)
            if qs is None or not any(s.when for s in qs.config.policy.steps):
                continue
            for _, entry in list(qs.entries):
                events += self._advance_steps(entry, now, cache)
        return events

    # ------------------------------------------------------------------ position

    def _pool(self, entry: QueueEntry) -> list[AgentState]:
        qs = self._queues[entry.queue]
        return [
            a
            for a in (self._agents[e] for e in qs.member_order)
            if a.staffed and self._eligible(a, entry.requirements)
        ]

    def _position(self, entry: QueueEntry, pool: list[AgentState]) -> int:
        if entry.state == "offering":
            return 1
        if not pool:  # nobody staffed qualifies: fall back to the order inside the caller's own queue
            own = self._queues[entry.queue].entries
            stop = bisect.bisect_left(own, entry.key, key=lambda item: item[0])
            return 1 + sum(1 for _, other in own[:stop] if other.state == "queued")
        ahead = 0
        for qs in self._queues.values():
            shared = [a for a in pool if a.extension in qs.members]
            if not shared or not qs.entries:
                continue
            competes: dict[Requirement, bool] = {}
            stop = bisect.bisect_left(qs.entries, entry.key, key=lambda item: item[0])
            for _, other in qs.entries[:stop]:
                if other.state != "queued":
                    continue
                req = other.requirements
                hit = competes.get(req)
                if hit is None:
                    hit = competes[req] = any(self._eligible(a, req) for a in shared)
                ahead += hit
        return ahead + 1

    # ------------------------------------------------------------------ invariants

    def _repaired(self, invariant: str, repair: str, now: float, **ids: Any) -> EngineEvent:
        log.warning("invariant repaired: %s -> %s %s", invariant, repair, ids)
        return EngineEvent("agent.invariant_repaired", None, {
            "invariant": invariant, "repair": repair, "at": now, **ids,
        })  # fmt: skip

    def _audit(
        self, now: float, *, agents: Sequence[AgentState] = (), entries: Sequence[QueueEntry] = (),
        offers: bool = False,
    ) -> list[EngineEvent]:  # fmt: skip
        events: list[EngineEvent] = []
        if offers:
            for offer in sorted(self._offers.values(), key=lambda o: o.offer_id):
                agent = self._agents.get(offer.extension)
                entry = self._entries.get(offer.call_id)
                agent_ok = (
                    agent is not None and agent.offer_id == offer.offer_id and agent.activity == "offered"
                )
                entry_ok = (
                    entry is not None and entry.offer_id == offer.offer_id and entry.state == "offering"
                )
                if not (agent_ok and entry_ok):
                    events.append(self._repaired("an offer names an offered agent and an offering caller",
                                                 "offer dropped", now, extension=offer.extension,
                                                 call_id=offer.call_id, offer_id=offer.offer_id))  # fmt: skip
                    events += self._cancel_offer(offer.offer_id, now, reason="invariant")
        for agent in agents:
            if agent.extension not in self._agents:
                continue
            ext = agent.extension
            live = self._offers.get(agent.offer_id) if agent.offer_id is not None else None
            if agent.activity == "offered" and (live is None or live.extension != ext):
                agent.offer_id = None
                events.append(self._repaired("offered => a live offer", "agent idle", now, extension=ext))
                events.append(self._set_activity(agent, "idle", now, cause="repair"))
            elif agent.activity != "offered" and agent.offer_id is not None:
                events.append(self._repaired("offer id => offered", "offer dropped", now, extension=ext,
                                             offer_id=agent.offer_id))  # fmt: skip
                stale, agent.offer_id = agent.offer_id, None
                if live is not None and live.extension == ext:
                    events += self._cancel_offer(stale, now, reason="invariant")
            if agent.activity in ON_CALL and agent.work is None:
                events.append(self._repaired("connected/held => a call", "agent idle", now, extension=ext))
                events.append(self._set_activity(agent, "idle", now, cause="repair"))
            if agent.activity in TIMED and agent.until is None:
                events.append(
                    self._repaired(f"{agent.activity} => an end time", "ends now", now, extension=ext)
                )
                agent.until = now
            if (ext in self._routable) != agent.routable or any(
                (ext in self._queues[q].routable) != agent.routable for q in agent.tiers
            ):
                events.append(
                    self._repaired("routable index matches state", "index rebuilt", now, extension=ext)
                )
                self._restamp(agent)
        for entry in entries:
            if self._entries.get(entry.call_id) is not entry:
                continue
            live = self._offers.get(entry.offer_id) if entry.offer_id is not None else None
            if entry.state == "offering" and (live is None or live.call_id != entry.call_id):
                events.append(self._repaired("offering => a live offer", "caller back to waiting", now,
                                             call_id=entry.call_id))  # fmt: skip
                self._requeue(entry)
            elif entry.state == "queued" and entry.offer_id is not None:
                events.append(
                    self._repaired("waiting => no offer", "offer id cleared", now, call_id=entry.call_id)
                )
                entry.offer_id = None
        return events
