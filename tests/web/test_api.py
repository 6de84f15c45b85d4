"""The HTTP API over real HTTP: uvicorn on 127.0.0.1 (ephemeral port), httpx as the client,
SQLite and PostgreSQL behind it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from helpline.events import DomainEvent, EventBus
from helpline.events.metrics import MetricsSink
from helpline.store import Store, StoreSink
from helpline.web import create_app, register_pipeline_metrics
from tests.web.http_support import bearer_headers, serve

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


@dataclass
class Api:
    http: httpx.AsyncClient
    bus: EventBus
    sink: StoreSink
    facts: dict[str, Any]


@pytest.fixture
async def api(migrated_store: Store) -> AsyncIterator[Api]:
    bus = EventBus()
    sink = StoreSink(migrated_store)
    sink.start()
    registry = CollectorRegistry()
    bus.subscribe(sink)
    bus.subscribe(MetricsSink(registry))
    register_pipeline_metrics(registry, bus, sink)
    facts: dict[str, Any] = {"status": "ok", "active_calls": 0}
    app = create_app(migrated_store, bus, registry, lambda: facts)
    headers = await bearer_headers(migrated_store)
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10, headers=headers) as http:
        yield Api(http, bus, sink, facts)
    await sink.aclose(give_up_after=10)


def publish_call(
    bus: EventBus, i: int, *, trunk: str = "carrier-a", disposition: str | None = "completed",
    caller: str = "+441632960001", flow: str = "main",
) -> str:  # fmt: skip
    """A whole call through the bus: offered at T0+i min, answered 1.5 s later, ended at +30 s."""
    cid = f"{i:032x}"
    at = T0 + timedelta(minutes=i)
    offered = {"sip_call_id": f"{i}@sbc", "trunk": trunk, "caller": caller, "did": "+441632960999",
               "source": "192.0.2.10:5060", "transport": "udp"}  # fmt: skip
    bus.publish(DomainEvent("call.offered", cid, offered, at))
    bus.publish(DomainEvent("call.answered", cid, {"codec": "PCMU", "flow_id": flow, "flow_version": "3"},
                            at + timedelta(seconds=1.5)))  # fmt: skip
    bus.publish(
        DomainEvent("ivr.flow_started", cid, {"flow": flow, "version": "3"}, at + timedelta(seconds=2))
    )
    bus.publish(DomainEvent("ivr.node_entered", cid, {"node_type": "menu"}, at + timedelta(seconds=2),
                            node_id="main_menu"))  # fmt: skip
    bus.publish(DomainEvent("dtmf.received", cid, {"digit": "2", "source": "rtp"}, at + timedelta(seconds=5)))
    bus.publish(DomainEvent("ivr.outcome", cid, {"outcome": "sales"}, at + timedelta(seconds=6)))
    if disposition is not None:
        bus.publish(DomainEvent("call.ended", cid, {"disposition": disposition, "sip_code": 200,
                                                     "reason": "bye", "by": "caller"},
                                at + timedelta(seconds=30)))  # fmt: skip
    return cid


async def test_list_calls_filters_and_iso_times(api: Api) -> None:
    for i in range(6):
        trunk = "carrier-b" if i % 2 else "carrier-a"
        disposition = "abandoned" if i == 4 else "completed"
        publish_call(api.bus, i, trunk=trunk, disposition=disposition, caller=f"+4416329600{i:02d}")
    await api.sink.flush()

    r = await api.http.get("/api/calls")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert [c["id"] for c in body["items"]] == [f"{i:032x}" for i in range(5, -1, -1)]
    assert body["next_cursor"] is None
    newest = body["items"][0]
    assert newest["started_at"] == "2025-03-01T09:05:00Z"
    assert newest["answered_at"] == "2025-03-01T09:05:01.500000Z"
    assert (newest["trunk"], newest["codec"], newest["flow_id"], newest["disposition"]) == (
        "carrier-b", "PCMU", "main", "completed")  # fmt: skip

    async def ids(**params: Any) -> list[int]:
        resp = await api.http.get("/api/calls", params=params)
        assert resp.status_code == 200, resp.text
        return [int(c["id"], 16) for c in resp.json()["items"]]

    assert await ids(trunk="carrier-b") == [5, 3, 1]
    assert await ids(disposition="abandoned") == [4]
    assert await ids(caller="+441632960002") == [2]
    assert await ids(did="+441632960999", flow_id="main") == [5, 4, 3, 2, 1, 0]
    assert await ids(flow_id="other") == []
    assert await ids(since="2025-03-01T09:02:00Z", until="2025-03-01T09:04:00Z") == [3, 2]
    assert await ids(since="2025-03-01T10:02:00+01:00") == [5, 4, 3, 2]  # offsets are honoured
    assert await ids(since="2025-03-01T09:04:00") == [5, 4]  # no offset: UTC


async def test_paging_with_cursor_and_offset(api: Api) -> None:
    for i in range(12):
        publish_call(api.bus, i)
    await api.sink.flush()
    seen: list[int] = []
    params: dict[str, Any] = {"limit": 5}
    for _ in range(5):
        body = (await api.http.get("/api/calls", params=params)).json()
        seen += [int(c["id"], 16) for c in body["items"]]
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert seen == list(range(11, -1, -1))
    body = (await api.http.get("/api/calls", params={"limit": 5, "offset": 10})).json()
    assert [int(c["id"], 16) for c in body["items"]] == [1, 0] and body["next_cursor"] is None


async def test_get_call_returns_events_in_order_and_404_when_unknown(api: Api) -> None:
    cid = publish_call(api.bus, 1)
    await api.sink.flush()
    r = await api.http.get(f"/api/calls/{cid}")
    assert r.status_code == 200
    call = r.json()
    assert call["id"] == cid and call["ended_at"] == "2025-03-01T09:01:30Z"
    assert [(e["seq"], e["type"]) for e in call["events"]] == [
        (1, "call.offered"), (2, "call.answered"), (3, "ivr.flow_started"), (4, "ivr.node_entered"),
        (5, "dtmf.received"), (6, "ivr.outcome"), (7, "call.ended"),
    ]  # fmt: skip
    assert call["events"][3]["node_id"] == "main_menu"
    assert call["events"][4]["data"] == {"digit": "2", "source": "rtp"}

    missing = await api.http.get("/api/calls/" + "e" * 32)
    assert missing.status_code == 404
    assert missing.json() == {"error": "no such call", "field": "call_id"}
    nowhere = await api.http.get("/api/nothing-here")
    assert nowhere.status_code == 404 and nowhere.json()["error"] == "Not Found"


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/calls", {"since": "yesterday"}, "since"),
        ("/api/calls", {"until": "2025-13-01T00:00:00Z"}, "until"),
        ("/api/calls", {"limit": "0"}, "limit"),
        ("/api/calls", {"limit": "501"}, "limit"),
        ("/api/calls", {"limit": "ten"}, "limit"),
        ("/api/calls", {"offset": "-1"}, "offset"),
        ("/api/calls", {"disposition": "exploded"}, "disposition"),
        ("/api/calls", {"cursor": "garbage!"}, "cursor"),
        ("/api/calls", {"cursor": "WyJjYWxscyIsIngiLDFd", "offset": "1"}, "offset"),
        ("/api/calls", {"colour": "red"}, "colour"),
        ("/api/calls", [("trunk", "a"), ("trunk", "b")], "trunk"),
        ("/api/security-events", {"since": "2025-03-01T25:00:00Z"}, "since"),
        (
            "/api/security-events",
            {"cursor": "WyJjYWxscyIsIjIwMjUtMDMtMDFUMDA6MDA6MDArMDA6MDAiLCJ4Il0"},
            "cursor",
        ),
    ],
)
async def test_bad_parameters_are_400_naming_the_field(api: Api, path: str, params: Any, field: str) -> None:
    r = await api.http.get(path, params=params)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["field"] == field and body["error"]


async def test_security_events_endpoint(api: Api) -> None:
    for i in range(5):
        api.bus.publish(DomainEvent("security.non_trunk_source" if i % 2 else "security.malformed", None,
                                    {"source": f"203.0.113.{i}:5060", "transport": "udp", "method": "INVITE"},
                                    T0 + timedelta(seconds=i)))  # fmt: skip
    await api.sink.flush()
    body = (
        await api.http.get("/api/security-events", params={"type": "security.malformed", "limit": 2})
    ).json()
    assert [e["source"] for e in body["items"]] == ["203.0.113.4:5060", "203.0.113.2:5060"]
    assert body["items"][0]["at"] == "2025-03-01T09:00:04Z" and body["items"][0]["data"]["method"] == "INVITE"
    params = {"cursor": body["next_cursor"], "type": "security.malformed"}
    rest = (await api.http.get("/api/security-events", params=params)).json()
    assert [e["source"] for e in rest["items"]] == ["203.0.113.0:5060"] and rest["next_cursor"] is None


def sample(families: dict[str, Any], name: str, **labels: str) -> float:
    for family in families.values():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    raise AssertionError(f"no sample {name}{labels}")


async def test_metrics_reflect_published_events(api: Api) -> None:
    publish_call(api.bus, 1, trunk="carrier-a", disposition="completed")
    publish_call(api.bus, 2, trunk="carrier-a", disposition=None)  # still up
    api.bus.publish(DomainEvent("call.offered", "r" * 32, {"trunk": "carrier-b"}, T0))
    api.bus.publish(DomainEvent("call.refused", "r" * 32, {"sip_code": 404, "reason": "unknown DID"}, T0))
    api.bus.publish(DomainEvent.now("security.blocked_country", None, {"source": "203.0.113.9:5060"}))
    api.bus.publish(DomainEvent.now("dtmf.received", "x" * 32, {"digit": "5", "source": "info"}))
    await api.sink.flush()

    r = await api.http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    assert sample(families, "helpline_calls_total", trunk="carrier-a", disposition="completed") == 1
    assert sample(families, "helpline_calls_total", trunk="carrier-b", disposition="refused") == 1
    assert sample(families, "helpline_calls_active") == 1
    assert sample(families, "helpline_call_setup_seconds_count") == 2
    assert sample(families, "helpline_call_setup_seconds_sum") == 3.0
    assert sample(families, "helpline_call_setup_seconds_bucket", le="1.0") == 0
    assert sample(families, "helpline_call_setup_seconds_bucket", le="2.0") == 2
    assert sample(families, "helpline_security_events_total", type="blocked_country") == 1
    assert sample(families, "helpline_ivr_nodes_total", flow="main", node_type="menu") == 2
    assert sample(families, "helpline_ivr_outcomes_total", flow="main", outcome="sales") == 2
    assert sample(families, "helpline_dtmf_total", source="rtp") == 2
    assert sample(families, "helpline_dtmf_total", source="info") == 1
    assert (
        sample(families, "helpline_store_events_written_total") == api.sink.written == 17
    )  # 7 + 6 + 2 + 1 + 1
    assert sample(families, "helpline_store_queue_depth") == 0
    assert "+44" not in r.text and "+1555" not in r.text  # never a caller number in a label


async def test_openapi_document_is_valid_and_complete(api: Api) -> None:
    r = await api.http.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    validate(doc)  # raises on an invalid OpenAPI 3.1 document
    assert doc["openapi"] == "3.1.0"
    assert {
        "/api/calls", "/api/calls/{call_id}", "/api/security-events", "/api/flows", "/healthz", "/metrics"
    } <= set(doc["paths"])
    params = {p["name"] for p in doc["paths"]["/api/calls"]["get"]["parameters"]}
    assert params == {"sip_call_id", "caller", "did", "trunk", "disposition", "flow_id", "since", "until",
                      "limit", "cursor", "offset"}  # fmt: skip
    detail_ref = doc["paths"]["/api/calls/{call_id}"]["get"]["responses"]["200"]["content"][
        "application/json"]["schema"]["$ref"]  # fmt: skip
    detail = doc["components"]["schemas"][detail_ref.rsplit("/", 1)[1]]
    assert "events" in detail["properties"] and "started_at" in detail["properties"]


async def test_healthz_follows_the_application_and_the_database(api: Api) -> None:
    r = await api.http.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["db"]["ok"] is True and body["app"]["active_calls"] == 0
    api.facts["status"] = "starting"
    r = await api.http.get("/healthz")
    assert r.status_code == 503 and r.json()["status"] == "unavailable"


async def test_healthz_is_503_when_the_database_is_unreachable(tmp_path: Any) -> None:
    store = Store(f"postgresql://postgres@/helpline?host={tmp_path}/no-server-here")
    app = create_app(store, EventBus(), CollectorRegistry(), lambda: {"status": "ok"})
    try:
        async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
            r = await http.get("/healthz")
            assert r.status_code == 503
            assert r.json()["db"]["ok"] is False
            calls = await http.get("/api/calls", headers={"Authorization": "Bearer any"})
            assert calls.status_code == 503 and calls.json() == {"error": "database unavailable"}
    finally:
        await store.close()
