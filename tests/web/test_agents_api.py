"""/api/agents over real HTTP (uvicorn + httpx) against SQLite and PostgreSQL, with an in-memory
queue runtime behind the QueueView port."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from prometheus_client import CollectorRegistry

from helpline.events import DomainEvent, EventBus
from helpline.queue.config import QueueConfig
from helpline.queue.profile import AgentProfile
from helpline.store import Store, StoreSink
from helpline.web import create_app
from tests.web.http_support import bearer_headers, serve
from tests.web.queue_double import QueueDouble

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
ANN = {
    "extension": "1001", "display_name": "Ann", "skills": {"spanish": 3}, "attributes": {"site": "berlin"},
    "queues": [{"queue": "sales", "tier": 2}], "wrapup_s": 5, "password": "s3cret!",
}  # fmt: skip


@dataclass
class Api:
    http: httpx.AsyncClient
    store: Store
    bus: EventBus
    sink: StoreSink
    runtime: QueueDouble


@pytest.fixture
async def api(migrated_store: Store) -> AsyncIterator[Api]:
    bus = EventBus()
    sink = StoreSink(migrated_store)
    sink.start()
    bus.subscribe(sink)
    runtime = QueueDouble(migrated_store.agents, {"sales": QueueConfig(), "support": QueueConfig()})
    app = create_app(migrated_store, bus, CollectorRegistry(), queues=runtime, agent_realm="example.org")
    headers = await bearer_headers(migrated_store)
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10, headers=headers) as http:
        yield Api(http, migrated_store, bus, sink, runtime)
    await sink.aclose(give_up_after=10)


def error(r: httpx.Response, status: int) -> tuple[str, str | None]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"]
    return body["error"], body.get("field")


async def test_create_then_read_back_merged_with_live_state(api: Api) -> None:
    r = await api.http.post("/api/agents", json=ANN)
    assert r.status_code == 201, r.text
    assert r.headers["location"] == "/api/agents/1001"
    created = r.json()
    assert {k: created[k] for k in ("extension", "display_name", "skills", "attributes", "queues")} == {
        "extension": "1001", "display_name": "Ann", "skills": {"spanish": 3},
        "attributes": {"site": "berlin"}, "queues": [{"queue": "sales", "tier": 2}],
    }  # fmt: skip
    assert created["wrapup_s"] == 5 and created["enabled"] is True and created["realm"] == "example.org"
    assert created["created_at"].endswith("Z")
    assert not {"password", "ha1_md5", "ha1_sha256"} & set(created)  # credentials never go out
    assert created["live"]["presence"] == "logged_out"  # the runtime reloaded it
    assert api.runtime.reloads == ["1001"]

    stored = await api.store.agents.get("1001")
    assert stored is not None
    assert stored.ha1_md5 == hashlib.md5(b"1001:example.org:s3cret!").hexdigest()

    await api.http.post("/api/agents", json=ANN | {"extension": "1000", "queues": []})
    listing = (await api.http.get("/api/agents")).json()["items"]
    assert [a["extension"] for a in listing] == ["1000", "1001"]
    assert listing[1]["live"]["queues"] == ["sales"] and "ha1_md5" not in listing[1]
    one = await api.http.get("/api/agents/1001")
    assert one.status_code == 200 and one.json()["display_name"] == "Ann" and one.json()["live"]
    assert error(await api.http.get("/api/agents/4040"), 404) == ("no such agent", "extension")


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (ANN | {"queues": [{"queue": "nowhere"}]}, 422, "queues.0.queue"),
        (ANN | {"skills": {"Spanish": 3}}, 422, "skills"),
        (ANN | {"skills": {"spanish": 300}}, 422, "skills"),
        (ANN | {"queues": [{"queue": "sales", "tier": 10}]}, 422, "queues.0.tier"),
        (ANN | {"extension": "has space"}, 422, "extension"),
        (ANN | {"wrapup_s": "soon"}, 422, "wrapup_s"),
        (ANN | {"colour": "red"}, 422, "colour"),
        ({k: v for k, v in ANN.items() if k != "password"}, 422, "password"),
        ({k: v for k, v in ANN.items() if k != "display_name"}, 422, "display_name"),
        (ANN | {"password": ""}, 422, "password"),
        (ANN | {"password": 1234}, 422, "password"),
    ],
)
async def test_create_refusals_name_the_field(
    api: Api, body: dict[str, Any], status: int, field: str
) -> None:
    _, named = error(await api.http.post("/api/agents", json=body), status)
    assert named == field
    assert (await api.http.get("/api/agents")).json()["items"] == []


async def test_malformed_bodies_are_400(api: Api) -> None:
    r = await api.http.post("/api/agents", content=b"{not json", headers={"content-type": "application/json"})
    assert error(r, 400)[1] == "body"
    assert error(await api.http.post("/api/agents", json=[ANN]), 400)[1] == "body"


async def test_duplicate_extension_is_409(api: Api) -> None:
    assert (await api.http.post("/api/agents", json=ANN)).status_code == 201
    message, field = error(await api.http.post("/api/agents", json=ANN | {"display_name": "Other"}), 409)
    assert field == "extension" and "1001" in message
    assert (await api.http.get("/api/agents/1001")).json()["display_name"] == "Ann"


async def test_patch_changes_some_fields(api: Api) -> None:
    await api.http.post("/api/agents", json=ANN)
    r = await api.http.patch(
        "/api/agents/1001", json={"queues": [{"queue": "support"}], "enabled": False, "extension": "1001"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["queues"] == [{"queue": "support", "tier": 1}] and body["enabled"] is False
    assert body["skills"] == {"spanish": 3} and body["display_name"] == "Ann"
    assert body["updated_at"] > body["created_at"]
    assert body["live"]["queues"] == ["support"] and api.runtime.reloads == ["1001", "1001"]
    cleared = await api.http.patch("/api/agents/1001", json={"wrapup_s": None})
    assert cleared.json()["wrapup_s"] is None

    assert error(await api.http.patch("/api/agents/1001", json={"skills": {"x": -1}}), 422)[1] == "skills"
    assert error(await api.http.patch("/api/agents/1001", json={"queues": [{"queue": "gone"}]}), 422)[1] == (
        "queues.0.queue"
    )
    assert error(await api.http.patch("/api/agents/1001", json={"extension": "2002"}), 422)[1] == "extension"
    assert error(await api.http.patch("/api/agents/1001", json={"password": "x"}), 422)[1] == "password"
    assert error(await api.http.patch("/api/agents/1001", json={"nickname": "A"}), 422)[1] == "nickname"
    assert error(await api.http.patch("/api/agents/4040", json={"enabled": True}), 404)[1] == "extension"
    assert (await api.http.get("/api/agents/1001")).json()["queues"] == [{"queue": "support", "tier": 1}]


async def test_delete_and_password(api: Api) -> None:
    await api.http.post("/api/agents", json=ANN)
    before = await api.store.agents.get("1001")
    r = await api.http.put("/api/agents/1001/password", json={"password": "n3w pass"})
    assert r.status_code == 204, r.text
    after = await api.store.agents.get("1001")
    assert before is not None and after is not None
    assert after.ha1_sha256 == hashlib.sha256(b"1001:example.org:n3w pass").hexdigest() != before.ha1_sha256
    assert error(await api.http.put("/api/agents/1001/password", json={"password": ""}), 422)[1] == "password"
    assert error(await api.http.put("/api/agents/1001/password", json={}), 422)[1] == "password"
    assert error(await api.http.put("/api/agents/4040/password", json={"password": "x"}), 404)[1] == (
        "extension"
    )

    assert (await api.http.delete("/api/agents/1001")).status_code == 204
    assert api.runtime.agent("1001") is None and api.runtime.reloads[-1] == "1001"
    assert error(await api.http.get("/api/agents/1001"), 404)[1] == "extension"
    assert error(await api.http.delete("/api/agents/1001"), 404)[1] == "extension"


async def test_presence_goes_to_the_runtime(api: Api) -> None:
    await api.http.post("/api/agents", json=ANN)
    r = await api.http.put("/api/agents/1001/presence", json={"presence": "ready", "reason": None})
    assert r.status_code == 200, r.text
    assert r.json()["presence"] == "ready"
    assert (await api.http.get("/api/agents/1001")).json()["live"]["presence"] == "ready"
    assert (await api.http.get("/api/queues/sales")).json()["ready"] == ["1001"]

    api.runtime.busy.add("1001")
    message, field = error(
        await api.http.put("/api/agents/1001/presence", json={"presence": "not_ready", "reason": "lunch"}),
        409,
    )
    assert field == "presence" and "on a call" in message
    assert error(await api.http.put("/api/agents/1001/presence", json={"presence": "asleep"}), 422)[1] == (
        "presence"
    )
    assert error(await api.http.put("/api/agents/1001/presence", json={}), 422)[1] == "presence"
    assert error(await api.http.put("/api/agents/4040/presence", json={"presence": "ready"}), 404)[1] == (
        "extension"
    )
    # Stored but not (yet) loaded by the runtime: the runtime refuses.
    await api.store.agents.create(AgentProfile(extension="1002", display_name="Bea"), "pw", "example.org")
    assert error(await api.http.put("/api/agents/1002/presence", json={"presence": "ready"}), 409)[1] == (
        "extension"
    )


async def test_agent_events_endpoint(api: Api) -> None:
    for i in range(5):
        api.bus.publish(DomainEvent("agent.presence", None, {"extension": "1001", "presence": f"p{i}"},
                                    T0 + timedelta(seconds=i)))  # fmt: skip
    api.bus.publish(DomainEvent("agent.reachable", None, {"extension": "1001", "reachable": False},
                                T0 + timedelta(seconds=10)))  # fmt: skip
    api.bus.publish(DomainEvent("agent.presence", None, {"extension": "2002"}, T0))
    await api.sink.flush()

    body = (await api.http.get("/api/agents/1001/events", params={"limit": 4})).json()
    assert [e["type"] for e in body["items"]] == ["agent.reachable"] + ["agent.presence"] * 3
    assert body["items"][0]["at"] == "2025-03-01T09:00:10Z" and body["items"][0]["extension"] == "1001"
    rest = await api.http.get("/api/agents/1001/events", params={"limit": 4, "cursor": body["next_cursor"]})
    assert [e["data"]["presence"] for e in rest.json()["items"]] == ["p1", "p0"]
    typed = await api.http.get(
        "/api/agents/1001/events", params={"type": "agent.presence", "since": "2025-03-01T09:00:03Z"}
    )
    assert [e["data"]["presence"] for e in typed.json()["items"]] == ["p4", "p3"]
    assert error(await api.http.get("/api/agents/1001/events", params={"since": "noon"}), 400)[1] == "since"
    assert error(await api.http.get("/api/agents/1001/events", params={"cursor": "zz"}), 400)[1] == "cursor"


async def test_queue_views(api: Api) -> None:
    await api.http.post("/api/agents", json=ANN)
    queues = (await api.http.get("/api/queues")).json()["items"]
    assert [q["name"] for q in queues] == ["sales", "support"] and queues[0]["members"] == ["1001"]
    assert (await api.http.get("/api/queues/support")).json()["members"] == []
    assert error(await api.http.get("/api/queues/nowhere"), 404) == ("no such queue", "name")


async def test_without_a_runtime_agents_are_still_managed(migrated_store: Store) -> None:
    app = create_app(migrated_store, EventBus(), CollectorRegistry(), queue_configs={"sales": QueueConfig()})
    headers = await bearer_headers(migrated_store)
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10, headers=headers) as http:
        r = await http.post("/api/agents", json=ANN)
        assert r.status_code == 201 and r.json()["live"] is None and r.json()["realm"] == "helpline"
        assert error(await http.post("/api/agents", json=ANN | {"extension": "1002", "queues": [
            {"queue": "support"}]}), 422)[1] == "queues.0.queue"  # fmt: skip
        assert (await http.get("/api/agents")).json()["items"][0]["live"] is None
        assert (await http.get("/api/queues")).json() == {"items": []}
        assert error(await http.get("/api/queues/sales"), 404)[1] == "name"
        message, _ = error(await http.put("/api/agents/1001/presence", json={"presence": "ready"}), 503)
        assert "not running" in message


async def test_openapi_lists_the_agent_and_queue_endpoints(api: Api) -> None:
    doc = (await api.http.get("/openapi.json")).json()
    validate(doc)
    assert {
        "/api/agents", "/api/agents/{extension}", "/api/agents/{extension}/password",
        "/api/agents/{extension}/presence", "/api/agents/{extension}/events", "/api/queues",
        "/api/queues/{name}", "/api/queues/{name}/kpis", "/api/calls/{call_id}/routing",
    } <= set(doc["paths"])  # fmt: skip
    agent = doc["paths"]["/api/agents/{extension}"]
    assert set(agent) >= {"get", "patch", "delete"}
    schemas = doc["components"]["schemas"]
    assert "password" in schemas["AgentCreate"]["required"]
    assert "extension" not in schemas["AgentPatch"]["properties"] and "required" not in schemas["AgentPatch"]
    assert "ha1_md5" not in schemas["AgentOut"]["properties"]
    kpi_params = {p["name"] for p in doc["paths"]["/api/queues/{name}/kpis"]["get"]["parameters"]}
    assert kpi_params == {"name", "since", "until"}
