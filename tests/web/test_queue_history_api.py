"""Routing explanations and queue KPIs, read back over real HTTP from events stored through the bus
(SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from helpline.events import DomainEvent, EventBus
from helpline.queue.config import QueueConfig
from helpline.queue.profile import AgentProfile, Membership
from helpline.queue.trace import Candidate, DecisionTrace
from helpline.store import Store, StoreSink
from helpline.web import create_app
from tests.web.http_support import bearer_headers, serve
from tests.web.queue_double import QueueDouble

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


@dataclass
class Api:
    http: httpx.AsyncClient
    store: Store
    bus: EventBus
    sink: StoreSink


@pytest.fixture
async def api(migrated_store: Store) -> AsyncIterator[Api]:
    bus = EventBus()
    sink = StoreSink(migrated_store)
    sink.start()
    bus.subscribe(sink)
    configs = {"sales": QueueConfig(sl_threshold_s=30, short_abandon_s=5), "support": QueueConfig()}
    runtime = QueueDouble(migrated_store.agents, configs)
    app = create_app(migrated_store, bus, CollectorRegistry(), queues=runtime)
    headers = await bearer_headers(migrated_store)
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10, headers=headers) as http:
        yield Api(http, migrated_store, bus, sink)
    await sink.aclose(give_up_after=10)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def trace(
    decision: str, chosen: str | None, candidates: tuple[Candidate, ...], step: int = 0
) -> dict[str, Any]:
    return DecisionTrace(
        decision_id=decision, at=5.0, trigger="tick", call_id="c" * 32, queue="sales", priority=0, age_s=4.0,
        wait_s=4.0, step=step, requirements="spanish >= 3", policy_version="abc123",
        score_order=("tier", "proficiency"), candidates=candidates, chosen=chosen,
        tie_break="score" if chosen else None,
    ).to_dict()  # fmt: skip


async def test_routing_decisions_and_why_not(api: Api) -> None:
    cid = "c" * 32
    api.bus.publish(DomainEvent("call.offered", cid, {"trunk": "t"}, at(0)))
    api.bus.publish(DomainEvent("queue.joined", cid, {"queue": "sales"}, at(1)))
    first = trace("d1", "1001", (
        Candidate("1001", True, score={"tier": 1, "proficiency": 5}),
        Candidate("1002", True, score={"tier": 1, "proficiency": 3}),
        Candidate("1003", False, excluded_because="not ready (lunch)"),
    ))  # fmt: skip
    api.bus.publish(DomainEvent("queue.offer", cid, {"offer_id": "o1", "queue": "sales", "extension": "1001",
                                                      "trace": first}, at(5)))  # fmt: skip
    api.bus.publish(
        DomainEvent("queue.offer_result", cid, {"offer_id": "o1", "outcome": "no_answer"}, at(20))
    )
    second = trace("d2", None, (
        Candidate("1001", False, excluded_because="cooldown after no_answer"),
        Candidate("1002", False, excluded_because="busy"),
    ), step=1)  # fmt: skip
    api.bus.publish(DomainEvent("queue.no_match", cid, {"queue": "sales", "trace": second}, at(21)))
    await api.sink.flush()

    r = await api.http.get(f"/api/calls/{cid}/routing")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["call_id"] == cid and body["agent"] is None
    decisions = body["decisions"]
    assert [(d["type"], d["decision_id"], d["chosen"], d["step"]) for d in decisions] == [
        ("queue.offer", "d1", "1001", 0), ("queue.no_match", "d2", None, 1)
    ]  # fmt: skip
    assert decisions[0]["queue"] == "sales" and decisions[0]["policy_version"] == "abc123"
    assert decisions[0]["at"] == "2025-03-01T09:00:05Z" and decisions[0]["agent"] is None
    assert [c["extension"] for c in decisions[0]["candidates"]] == ["1001", "1002", "1003"]
    assert decisions[0]["trace"]["entry"]["requirements"] == "spanish >= 3"

    async def why(agent: str) -> list[tuple[bool, str]]:
        resp = await api.http.get(f"/api/calls/{cid}/routing", params={"agent": agent})
        assert resp.status_code == 200 and resp.json()["agent"] == agent
        return [(d["agent"]["chosen"], d["agent"]["explanation"]) for d in resp.json()["decisions"]]

    assert await why("1001") == [(True, "chosen"), (False, "not eligible: cooldown after no_answer")]
    first_1002, second_1002 = await why("1002")
    assert first_1002[1].startswith("eligible, ranked below 1001") and "'proficiency': 3" in first_1002[1]
    assert second_1002 == (False, "not eligible: busy")
    assert (await why("1003"))[0] == (False, "not eligible: not ready (lunch)")
    assert await why("1009") == [(False, "not a candidate: not a member of the queue")] * 2
    entry = (await api.http.get(f"/api/calls/{cid}/routing", params={"agent": "1003"})).json()
    assert entry["decisions"][0]["agent"]["candidate"] == {
        "extension": "1003", "eligible": False, "excluded_because": "not ready (lunch)"
    }  # fmt: skip


async def test_routing_of_unknown_and_unrouted_calls(api: Api) -> None:
    r = await api.http.get("/api/calls/" + "f" * 32 + "/routing")
    assert r.status_code == 404 and r.json() == {"error": "no such call", "field": "call_id"}
    api.bus.publish(DomainEvent("call.offered", "a" * 32, {"trunk": "t"}, at(0)))
    await api.sink.flush()
    r = await api.http.get("/api/calls/" + "a" * 32 + "/routing")
    assert r.status_code == 200 and r.json()["decisions"] == []
    r = await api.http.get("/api/calls/" + "a" * 32 + "/routing", params={"agents": "1001"})
    assert r.status_code == 400 and r.json()["field"] == "agents"


def publish_queue_call(bus: EventBus, n: int, queue: str, joined: float, end: dict[str, Any]) -> str:
    """A call that joins ``queue`` at ``joined`` s and leaves as ``end`` says (wait_s after joining)."""
    cid = f"{n:032x}"
    bus.publish(DomainEvent("call.offered", cid, {"trunk": "t"}, at(joined - 1)))
    bus.publish(DomainEvent("queue.joined", cid, {"queue": queue, "priority": 0}, at(joined)))
    left_at = at(joined + end["wait_s"])
    if end["reason"] == "answered":
        bus.publish(DomainEvent("queue.connected", cid, {"queue": queue, "extension": "1001",
                                                          "wait_s": end["wait_s"]}, left_at))  # fmt: skip
    bus.publish(DomainEvent("queue.left", cid, {"queue": queue, **end}, left_at))
    return cid


async def test_kpis_are_computed_from_the_stored_events(api: Api) -> None:
    await api.store.agents.create(
        AgentProfile(extension="1001", display_name="Ann", queues=(Membership(queue="sales"),)),
        "pw",
        "helpline",
    )
    bus = api.bus
    answered = publish_queue_call(bus, 1, "sales", 10, {"reason": "answered", "wait_s": 10})
    publish_queue_call(bus, 2, "sales", 20, {"reason": "abandoned", "wait_s": 40})
    publish_queue_call(bus, 3, "sales", 30, {"reason": "abandoned", "wait_s": 2})  # short abandon
    publish_queue_call(bus, 4, "sales", 40, {"reason": "answered", "wait_s": 25})  # within 30 s, not 20 s
    publish_queue_call(bus, 5, "support", 50, {"reason": "answered", "wait_s": 50})  # another queue
    agent = {"extension": "1001", "presence": "ready", "reachable": True}
    bus.publish(DomainEvent("agent.activity", None, agent | {"activity": "idle"}, at(0)))
    bus.publish(DomainEvent("agent.activity", answered, agent | {"activity": "connected"}, at(20)))
    bus.publish(DomainEvent("agent.activity", answered, agent | {"activity": "wrapup"}, at(80)))
    handled = {"queue": "sales", "talk_s": 60.0, "hold_s": 0.0, "wrapup_s": 10.0}
    bus.publish(DomainEvent("agent.activity", None, agent | {"activity": "idle", "handled": handled}, at(90)))
    await api.sink.flush()

    r = await api.http.get(
        "/api/queues/sales/kpis", params={"since": "2025-03-01T09:00:00Z", "until": "2025-03-01T09:10:00Z"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["queue"], body["since"], body["until"]) == (
        "sales",
        "2025-03-01T09:00:00Z",
        "2025-03-01T09:10:00Z",
    )
    assert (body["sl_threshold_s"], body["short_abandon_s"]) == (30, 5)  # the queue's own thresholds
    total = body["kpis"]["total"]
    assert (total["offered"], total["answered"], total["abandoned"], total["short_abandons"]) == (4, 2, 2, 1)
    assert total["answered_within_threshold"] == 2 and total["service_level"] == pytest.approx(
        2 / 3, abs=1e-4
    )
    assert total["asa_s"] == 17.5 and total["longest_wait_s"] == 40
    assert total["abandonment_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert total["handled"] == 1 and total["aht_s"] == 70
    assert set(body["kpis"]["queues"]) == {"sales"}  # the support call is not in this queue's KPIs
    occupancy = body["kpis"]["agents"]["1001"]
    assert occupancy["handle_s"] == 70 and occupancy["available_s"] == 600 - 70

    later_window = {"since": "2025-03-01T10:00:00Z", "until": "2025-03-01T11:00:00Z"}
    later = await api.http.get("/api/queues/sales/kpis", params=later_window)
    assert later.status_code == 200 and later.json()["kpis"]["total"]["offered"] == 0
    default_window = await api.http.get("/api/queues/support/kpis")
    assert default_window.status_code == 200 and default_window.json()["sl_threshold_s"] == 20


@pytest.mark.parametrize(
    ("path", "params", "status", "field"),
    [
        ("/api/queues/nowhere/kpis", {}, 404, "name"),
        ("/api/queues/sales/kpis", {"since": "yesterday"}, 400, "since"),
        ("/api/queues/sales/kpis", {"since": "2025-03-02T00:00:00Z", "until": "2025-03-01T00:00:00Z"}, 400,
         "since"),
        ("/api/queues/sales/kpis", {"window": "1h"}, 400, "window"),
    ],
)  # fmt: skip
async def test_kpi_parameters_are_checked(
    api: Api, path: str, params: dict[str, str], status: int, field: str
) -> None:
    r = await api.http.get(path, params=params)
    assert r.status_code == status, r.text
    assert r.json()["field"] == field
