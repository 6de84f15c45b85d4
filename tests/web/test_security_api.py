"""``/api/security/bans`` over real HTTP on a real database: who may see and lift bans, what a lift
writes (the row and the audit log), and that the answers match the OpenAPI document."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
import pytest
from openapi_schema_validator import OAS31Validator
from prometheus_client import CollectorRegistry

from helpline.events import DomainEvent, EventBus
from helpline.sbc_bridge.guard.bans import Ban, BanChange
from helpline.store import Store, StoreSink
from helpline.store.audit import AuditFilters
from helpline.web import create_app
from tests.web.http_support import bearer_headers, serve

ROLES = ("admin", "supervisor", "agent", "compliance")


@dataclass
class Api:
    http: httpx.AsyncClient
    store: Store
    headers: dict[str, dict[str, str]]
    doc: dict[str, Any]

    def schema(self, path: str, method: str, status: str) -> OAS31Validator:
        body = self.doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
        return OAS31Validator({**body, "components": self.doc["components"]})


@pytest.fixture
async def api(migrated_store: Store) -> AsyncIterator[Api]:
    app = create_app(migrated_store, EventBus(), CollectorRegistry())
    headers = {role: await bearer_headers(migrated_store, f"user-{role}", role) for role in ROLES}
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        doc = (await http.get("/openapi.json")).json()
        yield Api(http, migrated_store, headers, doc)


async def ban(store: Store, key: str, *, kind: Literal["source", "user"] = "source", minutes: float = 15,
              reason: str = "auth_failures") -> None:  # fmt: skip
    now = datetime.now(UTC)
    until = now + timedelta(minutes=minutes)
    await store.bans.upsert(BanChange("banned", Ban(key, kind, reason, now, until)))


async def test_admins_and_supervisors_list_the_active_bans(api: Api) -> None:
    await ban(api.store, "192.0.2.7")
    await ban(api.store, "1001", kind="user", reason="user_auth_failures")
    await ban(api.store, "198.51.100.3", minutes=-1)  # already run out
    for role in ("admin", "supervisor"):
        r = await api.http.get("/api/security/bans", headers=api.headers[role])
        assert r.status_code == 200, r.text
        api.schema("/api/security/bans", "get", "200").validate(r.json())
        listed = {(b["key"], b["kind"]) for b in r.json()["items"]}
        assert listed == {("192.0.2.7", "source"), ("1001", "user")}
    r = await api.http.get("/api/security/bans", params={"all": "true"}, headers=api.headers["admin"])
    assert {b["key"] for b in r.json()["items"]} == {"192.0.2.7", "1001", "198.51.100.3"}
    for role in ("agent", "compliance"):
        r = await api.http.get("/api/security/bans", headers=api.headers[role])
        assert r.status_code == 403 and "admin or supervisor" in r.json()["error"], r.text
    r = await api.http.get("/api/security/bans", params={"everything": "1"}, headers=api.headers["admin"])
    assert r.status_code == 400 and r.json()["field"] == "everything"


async def test_an_admin_lifts_a_ban_and_the_lift_is_audited(api: Api) -> None:
    await ban(api.store, "2001:db8::7")
    r = await api.http.delete("/api/security/bans/2001:db8:0:0::7", headers=api.headers["admin"])
    assert r.status_code == 200, r.text
    api.schema("/api/security/bans/{key}", "delete", "200").validate(r.json())
    assert r.json()["key"] == "2001:db8::7" and r.json()["lifted_by"] == "user-admin"
    assert r.json()["lifted_at"] is not None
    assert (await api.http.get("/api/security/bans", headers=api.headers["admin"])).json()["items"] == []
    entries = (await api.store.audit.list(AuditFilters(action="unban"))).items
    assert [(e.actor, e.role, e.target_type, e.target_id, e.detail["reason"], e.detail["kind"])
            for e in entries] == [("user-admin", "admin", "ban", "2001:db8::7", "auth_failures", "source")]
    # lifting it again: nothing active any more
    r = await api.http.delete("/api/security/bans/2001:db8::7", headers=api.headers["admin"])
    assert r.status_code == 404 and r.json()["field"] == "key"
    api.schema("/api/security/bans/{key}", "delete", "404").validate(r.json())


async def test_only_an_admin_may_lift(api: Api) -> None:
    await ban(api.store, "192.0.2.8")
    for role in ("supervisor", "agent", "compliance"):
        r = await api.http.delete("/api/security/bans/192.0.2.8", headers=api.headers[role])
        assert r.status_code == 403, (role, r.text)
    assert [b.key for b in await api.store.bans.active()] == ["192.0.2.8"]
    denied = (await api.store.audit.list(AuditFilters(action="access_denied"))).items
    assert {e.actor for e in denied} == {"user-supervisor", "user-agent", "user-compliance"}


async def test_security_events_are_still_listed(api: Api) -> None:
    sink = StoreSink(api.store)
    sink.start()
    try:
        sink(DomainEvent.now("security.banned", None, {"key": "192.0.2.7", "kind": "source",
                                                        "reason": "auth_failures", "source": "192.0.2.7:5060",
                                                        "transport": "udp"}))  # fmt: skip
    finally:
        await sink.aclose(give_up_after=10)
    r = await api.http.get("/api/security-events", params={"type": "security.banned"},
                           headers=api.headers["supervisor"])  # fmt: skip
    assert r.status_code == 200, r.text
    assert [e["data"]["key"] for e in r.json()["items"]] == ["192.0.2.7"]
