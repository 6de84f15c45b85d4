"""A small driver around RoutingEngine for tests: a virtual clock and an event log."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from helpline.queue.config import QueueConfig
from helpline.queue.engine import EngineEvent, JoinResult, Offer, OfferOutcome, RoutingEngine
from helpline.queue.profile import AgentProfile, AttributeValue, Membership


class World:
    def __init__(self, queues: Mapping[str, QueueConfig] | None = None, **engine_kw: Any) -> None:
        self.engine = RoutingEngine(queues if queues is not None else {"q": QueueConfig()}, **engine_kw)
        self.now = 0.0
        self.events: list[EngineEvent] = []
        self.offers: list[Offer] = []
        self.log: list[dict[str, Any]] = []  # events as the store keeps them, stamped with the clock

    def record(self, events: Iterable[EngineEvent]) -> list[EngineEvent]:
        got = list(events)
        self.events.extend(got)
        self.log.extend({"type": e.type, "at": self.now, "call_id": e.call_id, "data": e.data} for e in got)
        return got

    def agent(
        self,
        ext: str,
        skills: Mapping[str, int] | None = None,
        queues: Iterable[str | tuple[str, int]] = ("q",),
        *,
        attributes: Mapping[str, AttributeValue] | None = None,
        ready: bool = True,
        reachable: bool = True,
        wrapup_s: float | None = None,
    ) -> None:
        members = tuple(
            Membership(queue=q) if isinstance(q, str) else Membership(queue=q[0], tier=q[1]) for q in queues
        )
        profile = AgentProfile(
            extension=ext, display_name=f"Agent {ext}", skills=dict(skills or {}),
            attributes=dict(attributes or {}), queues=members, wrapup_s=wrapup_s,
        )  # fmt: skip
        self.record(self.engine.upsert_agent(profile, self.now))
        if reachable:
            self.record(self.engine.set_reachable(ext, True, self.now))
        if ready:
            self.record(self.engine.set_presence(ext, "ready", None, self.now))

    def call(
        self, call_id: str, queue: str = "q", *, priority: int = 0, requirements: str | None = None,
        virtual_start: float | None = None,
    ) -> JoinResult:  # fmt: skip
        result, events = self.engine.enqueue(
            call_id, queue, priority=priority, requirements=requirements, data={"caller": call_id},
            now=self.now, virtual_start=virtual_start,
        )  # fmt: skip
        self.record(events)
        return result

    def advance(self, seconds: float) -> list[EngineEvent]:
        self.now += seconds
        return self.record(self.engine.tick(self.now))

    def route(self) -> list[Offer]:
        offers = self.engine.next_offers(self.now)
        for offer in offers:
            self.record(offer.events)
        self.offers.extend(offers)
        return offers

    def result(self, offer: Offer, outcome: OfferOutcome) -> list[EngineEvent]:
        return self.record(self.engine.offer_result(offer.offer_id, outcome, self.now))

    def end(self, ext: str) -> list[EngineEvent]:
        return self.record(self.engine.call_ended(ext, self.now))

    def presence(self, ext: str, presence: Any, reason: str | None = None) -> list[EngineEvent]:
        return self.record(self.engine.set_presence(ext, presence, reason, self.now))

    def leave(self, call_id: str, reason: Any = "abandoned") -> list[EngineEvent]:
        return self.record(self.engine.leave(call_id, reason, self.now))

    def types(self) -> list[str]:
        return [e.type for e in self.events]

    def of_type(self, kind: str) -> list[EngineEvent]:
        return [e for e in self.events if e.type == kind]

    def view(self, ext: str) -> dict[str, Any]:
        return self.engine.agent_view(ext, self.now)
