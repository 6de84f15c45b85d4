"""Signing in over real HTTP (uvicorn + httpx) on SQLite and PostgreSQL: cookies and their flags, the
CSRF check, bearer tokens, the failed sign-in limit, concurrent sessions, idle timeout, the role checks
on existing routes, and what all of it leaves in the audit log."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from helpline.config import WebSection
from helpline.events import EventBus
from helpline.queue.config import QueueConfig
from helpline.store import Store
from helpline.store.audit import AuditFilters
from helpline.web import create_app
from tests.web.http_support import add_user, serve

PASSWORD = "correct horse battery"
Client = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def client(migrated_store: Store) -> AsyncIterator[Client]:
    """``await client(**web_settings)``: a fresh httpx client on an app served with those settings
    (one app per test; later calls reuse it and just open another client, i.e. another browser)."""
    async with AsyncExitStack() as stack:
        base: list[str] = []

        async def make(**web: Any) -> httpx.AsyncClient:
            if not base:
                app = create_app(
                    migrated_store, EventBus(), CollectorRegistry(), web=WebSection(**web),
                    queue_configs={"sales": QueueConfig()},
                )  # fmt: skip
                base.append(await stack.enter_async_context(serve(app)))
            return await stack.enter_async_context(httpx.AsyncClient(base_url=base[0], timeout=10))

        await add_user(migrated_store, "ann", "admin", PASSWORD)
        yield make


async def sign_in(http: httpx.AsyncClient, username: str = "ann", password: str = PASSWORD,
                  **extra: Any) -> httpx.Response:  # fmt: skip
    return await http.post("/api/session", json={"username": username, "password": password, **extra})


def cookie_attributes(response: httpx.Response, name: str) -> set[str]:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{name}="):
            return {part.strip().lower() for part in header.split(";")[1:]}
    raise AssertionError(f"no {name} cookie set: {response.headers.get_list('set-cookie')}")


async def audit_actions(store: Store, **filters: Any) -> list[tuple[str, str, str | None]]:
    entries = [e async for e in store.audit.export(AuditFilters(**filters))]
    return [(e.action, e.outcome, e.detail.get("reason")) for e in entries]


async def test_browser_sign_in_sets_strict_cookies_and_needs_csrf(
    client: Client, migrated_store: Store
) -> None:
    http = await client()
    assert (await http.get("/api/me")).status_code == 401
    r = await sign_in(http)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user"]["username"] == "ann" and body["user"]["role"] == "admin"
    assert body["token"] is None and body["csrf"] == http.cookies["helpline_csrf"]
    assert "password_hash" not in body["user"]
    session = cookie_attributes(r, "helpline_session")
    assert {"httponly", "samesite=strict", "path=/"} <= session and "secure" not in session
    csrf = cookie_attributes(r, "helpline_csrf")
    assert "samesite=strict" in csrf and "httponly" not in csrf

    me = await http.get("/api/me")
    assert me.status_code == 200 and me.json()["session"]["kind"] == "browser"
    new_user = {"username": "bob", "role": "supervisor"}
    refused = await http.post("/api/users", json=new_user)
    assert refused.status_code == 403 and refused.json()["field"] == "X-CSRF-Token"
    wrong = await http.post("/api/users", json=new_user, headers={"X-CSRF-Token": "guess"})
    assert wrong.status_code == 403
    created = await http.post("/api/users", json=new_user, headers={"X-CSRF-Token": body["csrf"]})
    assert created.status_code == 201, created.text

    out = await http.delete("/api/session", headers={"X-CSRF-Token": body["csrf"]})
    assert out.status_code == 204
    assert "max-age=0" in cookie_attributes(out, "helpline_session")
    http.cookies.set("helpline_session", r.cookies["helpline_session"])  # a copy kept by an attacker
    after = await http.get("/api/me")
    assert after.status_code == 401 and "signed_out" in after.json()["error"]
    assert await audit_actions(migrated_store, actor="ann") == [
        ("sign_in", "ok", None), ("user_add", "ok", None), ("sign_out", "ok", None),
    ]


async def test_secure_cookies_when_configured(client: Client) -> None:
    http = await client(secure_cookies=True)
    r = await sign_in(http)
    assert "secure" in cookie_attributes(r, "helpline_session")
    assert "secure" in cookie_attributes(r, "helpline_csrf")


async def test_bearer_token_needs_no_csrf(client: Client) -> None:
    http = await client()
    r = await sign_in(http, kind="api")
    assert r.status_code == 200 and not r.headers.get_list("set-cookie")
    token = r.json()["token"]
    assert token and r.json()["csrf"] is None
    headers = {"Authorization": f"Bearer {token}"}
    assert (await http.get("/api/me", headers=headers)).json()["session"]["kind"] == "api"
    created = await http.post("/api/users", json={"username": "cy", "role": "agent"}, headers=headers)
    assert created.status_code == 201 and len(created.json()["password"]) >= 16
    bad = await http.get("/api/me", headers={"Authorization": "Bearer not-a-token"})
    assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"


async def test_public_routes_need_no_sign_in(client: Client) -> None:
    http = await client()
    for path in ("/healthz", "/metrics", "/openapi.json"):
        assert (await http.get(path)).status_code == 200, path
    for path in ("/api/calls", "/api/agents", "/api/users", "/api/audit", "/api/flows"):
        assert (await http.get(path)).status_code == 401, path


async def test_failed_sign_ins_are_limited_per_username(client: Client, migrated_store: Store) -> None:
    http = await client(login_max_failures=3, login_window_s=60)
    for _ in range(3):
        r = await sign_in(http, password="wrong")
        assert r.status_code == 401 and r.json()["error"] == "wrong username or password"
    limited = await sign_in(http)  # even the right password waits now
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    unknown = await sign_in(http, username="nobody", password="x")
    assert unknown.status_code == 429  # the address has failed too often as well
    assert await audit_actions(migrated_store, action="sign_in") == [
        ("sign_in", "failed", "wrong_password")] * 3 + [("sign_in", "denied", "rate_limited")] * 2


async def test_failed_sign_ins_are_limited_per_address(client: Client, migrated_store: Store) -> None:
    http = await client(login_max_failures=3, login_window_s=60)
    for name in ("x1", "x2", "x3"):
        assert (await sign_in(http, username=name, password="x")).status_code == 401
    assert (await sign_in(http)).status_code == 429
    reasons = [a[2] for a in await audit_actions(migrated_store, action="sign_in")]
    assert reasons == ["unknown_user"] * 3 + ["rate_limited"]


async def test_second_session_ends_the_first(client: Client, migrated_store: Store) -> None:
    first, second = await client(), await client()
    assert (await sign_in(first)).status_code == 200
    assert (await first.get("/api/me")).status_code == 200
    assert (await sign_in(second)).status_code == 200
    ended = await first.get("/api/me")
    assert ended.status_code == 401 and "replaced" in ended.json()["error"]
    assert (await second.get("/api/me")).status_code == 200
    assert ("session_end", "ok", "replaced") in await audit_actions(migrated_store, actor="ann")


async def test_second_session_is_refused_by_policy(client: Client, migrated_store: Store) -> None:
    first, second = await client(concurrent_sessions="refuse"), await client()
    assert (await sign_in(first)).status_code == 200
    refused = await sign_in(second)
    assert refused.status_code == 409 and "signed in elsewhere" in refused.json()["error"]
    assert (await first.get("/api/me")).status_code == 200
    assert ("sign_in", "denied", "concurrent_session") in await audit_actions(migrated_store, actor="ann")


async def test_sessions_may_coexist_by_policy(client: Client) -> None:
    first, second = await client(concurrent_sessions="allow"), await client()
    await sign_in(first)
    await sign_in(second)
    assert (await first.get("/api/me")).status_code == 200
    assert (await second.get("/api/me")).status_code == 200


async def test_idle_browser_session_ends(client: Client, migrated_store: Store) -> None:
    http = await client(session_idle_minutes=0.02)  # 1.2 s
    await sign_in(http)
    await asyncio.sleep(0.5)
    assert (await http.get("/api/me")).status_code == 200
    await asyncio.sleep(1.5)
    r = await http.get("/api/me")
    assert r.status_code == 401 and "idle" in r.json()["error"]
    assert ("session_end", "ok", "idle") in await audit_actions(migrated_store, actor="ann")


async def test_disabled_user_loses_sessions_and_cannot_sign_in(client: Client, migrated_store: Store) -> None:
    admin, bob = await client(), await client()
    await add_user(migrated_store, "bob", "supervisor", PASSWORD)
    token = (await sign_in(admin, kind="api")).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert (await sign_in(bob, username="bob")).status_code == 200
    assert (await bob.get("/api/calls")).status_code == 200
    r = await admin.patch("/api/users/bob", json={"disabled": True}, headers=headers)
    assert r.status_code == 200 and r.json()["disabled"] is True
    assert "user_disabled" in (await bob.get("/api/calls")).json()["error"]
    assert (await sign_in(bob, username="bob")).status_code == 401
    reasons = await audit_actions(migrated_store, target_id="bob")
    assert ("user_disable", "ok", None) in reasons and ("sign_in", "failed", "disabled") in reasons


async def test_roles_on_existing_routes(client: Client, migrated_store: Store) -> None:
    http = await client()
    people = (("sue", "supervisor", None), ("cat", "compliance", None), ("al", "agent", "1001"))
    for name, role, ext in people:
        await add_user(migrated_store, name, role, PASSWORD, agent_extension=ext)

    async def as_user(name: str) -> dict[str, str]:
        token = (await sign_in(http, username=name, kind="api")).json()["token"]
        return {"Authorization": f"Bearer {token}"}

    sue, cat, al = await as_user("sue"), await as_user("cat"), await as_user("al")
    agent = {"extension": "1001", "display_name": "Al", "password": "sip-secret"}
    for headers in (sue, cat):
        assert (await http.get("/api/calls", headers=headers)).status_code == 200
        assert (await http.get("/api/agents", headers=headers)).status_code == 200
        assert (await http.post("/api/agents", json=agent, headers=headers)).status_code == 403
    denied = await http.get("/api/calls", headers=al)
    assert denied.status_code == 403
    assert denied.json()["error"] == "this needs the role admin or supervisor or compliance (you are agent)"
    assert (await http.get("/api/users", headers=al)).status_code == 403
    assert (await http.get("/api/users", headers=sue)).status_code == 403
    assert (await http.get("/api/audit", headers=sue)).status_code == 403
    assert (await http.get("/api/audit", headers=cat)).status_code == 200

    # Presence: an agent user may change only their own; a supervisor any; compliance none.
    other = await http.put("/api/agents/1002/presence", json={"presence": "ready"}, headers=al)
    assert other.status_code == 403 and "agent 1002" in other.json()["error"]
    own = await http.put("/api/agents/1001/presence", json={"presence": "ready"}, headers=al)
    assert own.status_code == 404 and own.json()["field"] == "extension"  # past the role check
    sup = await http.put("/api/agents/1002/presence", json={"presence": "ready"}, headers=sue)
    assert sup.status_code == 404
    comp = await http.put("/api/agents/1001/presence", json={"presence": "ready"}, headers=cat)
    assert comp.status_code == 403

    denials = [e async for e in migrated_store.audit.export(AuditFilters(action="access_denied"))]
    assert {(e.actor, e.detail["path"]) for e in denials} >= {
        ("al", "/api/calls"), ("al", "/api/users"), ("sue", "/api/audit"),
        ("al", "/api/agents/1002/presence"),
    }
    assert all(e.outcome == "denied" for e in denials)
    assert (await migrated_store.audit.verify_chain()).ok
