"""/api/users and /api/audit over real HTTP on SQLite and PostgreSQL, and the first-start admin."""

from __future__ import annotations

import csv
import io
import json
import logging
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from helpline.events import EventBus
from helpline.store import Store
from helpline.web import create_app
from helpline.web.users import INITIAL_PASSWORD_FILE, ensure_initial_admin
from tests.web.http_support import bearer_headers, serve


@pytest.fixture
async def http(migrated_store: Store) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(migrated_store, EventBus(), CollectorRegistry())
    headers = await bearer_headers(migrated_store, "root")
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10, headers=headers) as client:
        yield client


async def test_add_user_then_they_sign_in(http: httpx.AsyncClient) -> None:
    r = await http.post("/api/users", json={"username": "sue", "role": "supervisor", "display_name": "Sue"})
    assert r.status_code == 201 and r.headers["location"] == "/api/users/sue"
    password = r.json()["password"]
    assert r.json()["user"]["display_name"] == "Sue"
    given = await http.post("/api/users", json={"username": "al", "role": "agent", "agent_extension": "1001",
                                               "password": "long enough"})  # fmt: skip
    assert given.status_code == 201 and given.json()["password"] is None
    names = [u["username"] for u in (await http.get("/api/users")).json()["items"]]
    assert names == ["al", "root", "sue"]
    async with httpx.AsyncClient(base_url=str(http.base_url), timeout=10) as browser:
        signed = await browser.post("/api/session", json={"username": "sue", "password": password})
        assert signed.status_code == 200 and signed.json()["user"]["role"] == "supervisor"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"username": "x y", "role": "agent"}, 422, "username"),
        ({"username": "ok", "role": "root"}, 422, "role"),
        ({"username": "ok", "role": "agent", "password": "short"}, 422, "password"),
        ({"username": "ok", "role": "agent", "extra": 1}, 422, "extra"),
        ({"username": "root", "role": "agent"}, 409, "username"),
    ],
)
async def test_add_user_refusals_name_the_field(
    http: httpx.AsyncClient, body: dict[str, object], status: int, field: str
) -> None:
    r = await http.post("/api/users", json=body)
    assert r.status_code == status, r.text
    assert r.json()["field"] == field


async def test_role_change_and_last_admin(http: httpx.AsyncClient, migrated_store: Store) -> None:
    await http.post("/api/users", json={"username": "sue", "role": "supervisor"})
    r = await http.patch("/api/users/sue", json={"role": "compliance", "display_name": "Sue C."})
    assert r.status_code == 200 and r.json()["role"] == "compliance"
    refused = await http.patch("/api/users/root", json={"role": "agent"})
    assert refused.status_code == 409 and refused.json()["field"] == "role"
    assert (await http.patch("/api/users/root", json={"disabled": True})).status_code == 409
    assert (await http.patch("/api/users/nobody", json={"disabled": True})).status_code == 404
    assert (await http.patch("/api/users/sue", json={"role": None})).status_code == 422
    page = (await http.get("/api/audit", params={"target_id": "sue"})).json()
    actions = [(e["action"], e["actor"], e["detail"]) for e in page["items"]]
    assert actions[:2] == [
        ("user_change", "root", {"display_name": "Sue C."}),
        ("role_change", "root", {"from": "supervisor", "to": "compliance"}),
    ]


async def test_password_change_ends_their_sessions(http: httpx.AsyncClient) -> None:
    await http.post("/api/users", json={"username": "sue", "role": "supervisor", "password": "first-pass"})
    async with httpx.AsyncClient(base_url=str(http.base_url), timeout=10) as browser:
        await browser.post("/api/session", json={"username": "sue", "password": "first-pass"})
        assert (await browser.get("/api/me")).status_code == 200
        assert (await http.patch("/api/users/sue", json={"password": "second-pass"})).status_code == 200
        assert "password_changed" in (await browser.get("/api/me")).json()["error"]
        again = await browser.post("/api/session", json={"username": "sue", "password": "second-pass"})
        assert again.status_code == 200


async def test_audit_list_pages_and_export(http: httpx.AsyncClient, migrated_store: Store) -> None:
    for i in range(4):
        await migrated_store.audit.append("play", actor="cat", target_type="recording", target_id=f"r{i}",
                                          detail={"start": i, "end": i + 5})  # fmt: skip
    first = (await http.get("/api/audit", params={"actor": "cat", "limit": 3})).json()
    assert [e["target_id"] for e in first["items"]] == ["r3", "r2", "r1"]
    rest = (await http.get("/api/audit", params={"actor": "cat", "cursor": first["next_cursor"]})).json()
    assert [e["target_id"] for e in rest["items"]] == ["r0"] and rest["next_cursor"] is None
    bad = await http.get("/api/audit", params={"since": "yesterday"})
    assert bad.status_code == 400 and bad.json()["field"] == "since"

    jsonl = await http.get("/api/audit/export", params={"action": "play"})
    assert jsonl.status_code == 200 and jsonl.headers["content-type"].startswith("application/x-ndjson")
    assert "attachment" in jsonl.headers["content-disposition"]
    rows = [json.loads(line) for line in jsonl.text.splitlines()]
    assert [r["target_id"] for r in rows] == ["r0", "r1", "r2", "r3"]
    assert rows[0]["detail"] == {"start": 0, "end": 5}
    table = await http.get("/api/audit/export", params={"format": "csv", "actor": "cat"})
    parsed = list(csv.DictReader(io.StringIO(table.text)))
    assert [r["target_id"] for r in parsed] == ["r0", "r1", "r2", "r3"]
    assert json.loads(parsed[1]["detail"]) == {"start": 1, "end": 6} and len(parsed[0]["entry_hash"]) == 64
    assert (await http.get("/api/audit/export", params={"format": "xml"})).status_code == 400

    viewed = (await http.get("/api/audit", params={"action": "audit_export"})).json()["items"]
    assert [e["detail"].get("format") for e in viewed] == ["csv", "jsonl"]  # exports are audited
    assert (await migrated_store.audit.verify_chain()).ok


async def test_initial_admin_is_created_once(
    migrated_store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path = await ensure_initial_admin(migrated_store, tmp_path / "data")
    assert path == tmp_path / "data" / INITIAL_PASSWORD_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    password = path.read_text().strip()
    assert len(password) >= 20
    assert str(path) in caplog.text and password not in caplog.text
    assert await ensure_initial_admin(migrated_store, tmp_path / "data") is None
    app = create_app(migrated_store, EventBus(), CollectorRegistry())
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as browser:
        r = await browser.post("/api/session", json={"username": "admin", "password": password})
        assert r.status_code == 200 and r.json()["user"]["role"] == "admin"
