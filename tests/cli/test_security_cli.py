"""``helpline security bans|unban`` through the installed entry point (a real subprocess) on a temp
SQLite database that the test fills the way the running service does."""

from __future__ import annotations

import getpass
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from helpline.sbc_bridge.guard.bans import Ban, BanChange
from helpline.store import Store, upgrade
from tests.cli.cli_support import CliGroup


class Cli(CliGroup):
    def __init__(self, tmp_path: Path) -> None:
        data = tmp_path / "data"
        config = tmp_path / "helpline.toml"
        config.write_text(f'[server]\ndata_dir = "{data}"\n')
        super().__init__("security", config, data / "helpline.sqlite3")

    @property
    def url(self) -> str:
        return f"sqlite:///{self.db}"

    def audit(self) -> list[tuple[str, str, str, str, str]]:
        with sqlite3.connect(self.db) as conn:
            rows = conn.execute("SELECT actor, action, target_type, target_id, detail FROM audit_log "
                                "WHERE action = 'unban' ORDER BY id").fetchall()  # fmt: skip
        return [(str(a), str(b), str(c), str(d), str(e)) for a, b, c, d, e in rows]


async def seed(cli: Cli, *bans: BanChange) -> None:
    await upgrade(cli.url)
    store = Store(cli.url)
    try:
        for ban in bans:
            await store.bans.upsert(ban)
    finally:
        await store.close()


def banned(key: str, *, kind: Literal["source", "user"] = "source", reason: str = "auth_failures",
           minutes: float = 15) -> BanChange:  # fmt: skip
    now = datetime.now(UTC)
    return BanChange("banned", Ban(key, kind, reason, now, now + timedelta(minutes=minutes)))


async def test_bans_lists_active_bans_as_a_table_and_as_json(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    assert cli.ok("bans").strip() == "no active bans"
    await seed(cli, banned("192.0.2.7"), banned("1001", kind="user", reason="user_auth_failures"),
               banned("198.51.100.3", minutes=-1))  # fmt: skip
    table = cli.ok("bans").splitlines()
    assert table[0].split() == ["KEY", "KIND", "REASON", "SINCE", "UNTIL", "STATUS"]
    assert sorted(line.split()[0] for line in table[1:]) == ["1001", "192.0.2.7"]
    assert all(line.rstrip().endswith("active") for line in table[1:])
    listed = json.loads(cli.ok("bans", "--json"))
    assert {(b["key"], b["kind"], b["reason"]) for b in listed} == {
        ("192.0.2.7", "source", "auth_failures"), ("1001", "user", "user_auth_failures")}
    everything = json.loads(cli.ok("bans", "--all", "--json"))
    assert {b["key"] for b in everything} == {"192.0.2.7", "1001", "198.51.100.3"}
    expired = [line for line in cli.ok("bans", "--all").splitlines() if line.startswith("198.51.100.3")]
    assert len(expired) == 1 and expired[0].endswith("expired")


async def test_unban_lifts_the_ban_and_audits_it_as_the_cli_actor(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    await seed(cli, banned("192.0.2.7"), banned("1001", kind="user", reason="user_auth_failures"))
    assert cli.ok("unban", "192.0.2.7").strip() == "unbanned 192.0.2.7"
    assert cli.ok("unban", "1001").strip() == "unlocked extension 1001"
    assert json.loads(cli.ok("bans", "--json")) == []
    lifted = json.loads(cli.ok("bans", "--all", "--json"))
    actor = f"cli:{getpass.getuser()}"
    assert {(b["key"], b["lifted_by"]) for b in lifted} == {("192.0.2.7", actor), ("1001", actor)}
    assert [row[:4] for row in cli.audit()] == [
        (actor, "unban", "ban", "192.0.2.7"), (actor, "unban", "ban", "1001")]
    assert json.loads(cli.audit()[0][4])["reason"] == "auth_failures"
    assert "lifted by" in cli.ok("bans", "--all")


async def test_unban_of_nothing_active_is_refused_naming_the_key(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    await seed(cli, banned("198.51.100.3", minutes=-1))
    assert "key: no active ban or lock for '203.0.113.5'" in cli.refused("unban", "203.0.113.5")
    assert "key: no active ban or lock for '198.51.100.3'" in cli.refused("unban", "198.51.100.3")
    assert "key: must not be empty" in cli.refused("unban", " ")
    assert cli.audit() == []


async def test_unban_takes_an_ipv6_address_in_any_spelling(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    await seed(cli, banned("2001:db8::7"))
    assert cli.ok("unban", "2001:0DB8:0:0::7").strip() == "unbanned 2001:db8::7"
