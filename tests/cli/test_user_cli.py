"""``helpline user ...`` through the installed entry point (a real subprocess) on a temp SQLite DB; the
passwords and tokens it prints are then used against the API over real HTTP."""

from __future__ import annotations

import getpass
import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from helpline.events import EventBus
from helpline.store import Store
from helpline.web import create_app
from tests.cli.cli_support import CliGroup
from tests.web.http_support import serve


class Cli(CliGroup):
    def __init__(self, config: Path, db: Path) -> None:
        super().__init__("user", config, db)

    def audit(self) -> list[tuple[str, str, str]]:
        with sqlite3.connect(self.db) as conn:
            rows = conn.execute("SELECT actor, action, target_id FROM audit_log ORDER BY id").fetchall()
        return [(str(a), str(b), str(c)) for a, b, c in rows]


def cli_for(tmp_path: Path) -> Cli:
    data = tmp_path / "data"
    config = tmp_path / "helpline.toml"
    config.write_text(f'[server]\ndata_dir = "{data}"\n\n[web]\napi_token_days = 2\n')
    return Cli(config, data / "helpline.sqlite3")


def printed_password(out: str) -> str:
    lines = [line for line in out.splitlines() if line.startswith("password: ")]
    assert len(lines) == 1, out
    return lines[0].removeprefix("password: ")


async def api_as(db: Path, **request: Any) -> httpx.Response:
    """One request to an app on the CLI's database."""
    store = Store(f"sqlite:///{db}")
    try:
        app = create_app(store, EventBus(), CollectorRegistry())
        async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
            return await http.request(**request)
    finally:
        await store.close()


async def test_add_list_passwd_disable_enable_token(tmp_path: Path) -> None:
    cli = cli_for(tmp_path)
    out = cli.ok("add", "ann", "--role", "admin", "--display-name", "Ann Admin")
    password = printed_password(out)
    assert len(password) >= 20
    cli.ok("add", "al", "--role", "agent", "--agent-extension", "1001", "--password-stdin",
           stdin="agent secret\n")  # fmt: skip
    listed = json.loads(cli.ok("list", "--json"))
    assert [(u["username"], u["role"], u["agent_extension"]) for u in listed] == [
        ("al", "agent", "1001"), ("ann", "admin", None)]
    assert "password_hash" not in listed[0]
    table = cli.ok("list")
    assert table.splitlines()[0].split() == ["USERNAME", "ROLE", "ENABLED", "AGENT", "NAME"]

    signed = await api_as(cli.db, method="POST", url="/api/session",
                          json={"username": "ann", "password": password})  # fmt: skip
    assert signed.status_code == 200

    token = cli.ok("token", "ann").strip()
    me = await api_as(cli.db, method="GET", url="/api/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json()["session"]["kind"] == "token"
    expires = me.json()["session"]["expires_at"]
    assert expires > me.json()["session"]["created_at"]

    new_password = printed_password(cli.ok("passwd", "al"))
    ok = await api_as(cli.db, method="POST", url="/api/session",
                      json={"username": "al", "password": new_password, "kind": "api"})  # fmt: skip
    assert ok.status_code == 200
    assert "1 session(s) ended" in cli.ok("disable", "al")
    refused = await api_as(cli.db, method="POST", url="/api/session",
                           json={"username": "al", "password": new_password})  # fmt: skip
    assert refused.status_code == 401
    cli.ok("enable", "al")

    actor = f"cli:{getpass.getuser()}"
    assert [(a, b, c) for a, b, c in cli.audit() if a == actor] == [
        (actor, "user_add", "ann"), (actor, "user_add", "al"), (actor, "token_issue", "ann"),
        (actor, "password_change", "al"), (actor, "user_disable", "al"), (actor, "user_enable", "al"),
    ]


def test_refusals_exit_2_naming_the_field(tmp_path: Path) -> None:
    cli = cli_for(tmp_path)
    cli.ok("add", "ann", "--role", "admin")
    cases = [
        (("add", "ann", "--role", "admin"), "username"),
        (("add", "bad name", "--role", "agent"), "username"),
        (("add", "bo", "--role", "agent", "--password-stdin"), "password"),
        (("disable", "nobody"), "username"),
        (("disable", "ann"), "no enabled admin"),
        (("token", "ann", "--days", "0"), "days"),
    ]
    for args, named in cases:
        result = cli(*args, stdin="short\n" if "--password-stdin" in args else None)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert named in result.stderr, (args, result.stderr)
    bad_role = cli("add", "x", "--role", "root")
    assert bad_role.returncode == 2 and "--role" in bad_role.stderr
