"""``helpline agent ...`` through the installed entry point (a real subprocess) on a temp SQLite DB."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.cli.cli_support import HELPLINE, CliGroup


class Cli(CliGroup):
    def __init__(self, config: Path, db: Path) -> None:
        super().__init__("agent", config, db)

    def show(self, extension: str) -> dict[str, Any]:
        shown: dict[str, Any] = json.loads(self.ok("show", extension, "--json"))
        return shown

    def ha1s(self, extension: str) -> tuple[str, str, str]:
        with sqlite3.connect(self.db) as conn:
            row = conn.execute(
                "SELECT realm, ha1_md5, ha1_sha256 FROM agents WHERE extension = ?", (extension,)
            ).fetchone()
        realm, md5, sha256 = row
        return str(realm), str(md5), str(sha256)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    data = tmp_path / "data"  # does not exist yet: the CLI creates it and migrates the database
    config = tmp_path / "helpline.toml"
    config.write_text(
        f'[server]\ndata_dir = "{data}"\n\n[agents]\nrealm = "example.org"\n\n'
        "[queues.sales]\n\n[queues.support]\nsl_threshold_s = 30\n"
    )
    return Cli(config, data / "helpline.sqlite3")


def test_add_show_list_with_every_option(cli: Cli) -> None:
    out = cli.ok(
        "add", "1001", "--name", "Ann Smith", "--password-stdin", "--skill", "spanish=3", "--skill",
        "billing=7", "--attr", "site=berlin", "--attr", "senior=true", "--attr", "desk=12", "--attr",
        "badge=007", "--queue", "sales:2", "--queue", "support", "--wrapup", "12.5",
        stdin="correct horse\n",
    )  # fmt: skip
    assert "1001" in out
    shown = cli.show("1001")
    assert shown["display_name"] == "Ann Smith" and shown["enabled"] is True
    assert shown["skills"] == {"spanish": 3, "billing": 7}
    assert shown["attributes"] == {"site": "berlin", "senior": True, "desk": 12, "badge": "007"}
    assert shown["queues"] == [{"queue": "sales", "tier": 2}, {"queue": "support", "tier": 1}]
    assert shown["wrapup_s"] == 12.5 and shown["realm"] == "example.org"
    assert not {"ha1_md5", "ha1_sha256", "password"} & set(shown)

    realm, md5, sha256 = cli.ha1s("1001")
    assert realm == "example.org"
    assert md5 == hashlib.md5(b"1001:example.org:correct horse").hexdigest()
    assert sha256 == hashlib.sha256(b"1001:example.org:correct horse").hexdigest()

    cli.ok("add", "0999", "--name", "Bob", "--password", "pw", "--disabled")
    table = cli.ok("list").splitlines()
    assert table[0].split() == ["EXT", "NAME", "ENABLED", "QUEUES", "SKILLS", "WRAPUP"]
    assert table[1].split() == ["0999", "Bob", "no", "-", "-", "-"]
    assert table[2].split() == [
        "1001",
        "Ann",
        "Smith",
        "yes",
        "sales:2,support:1",
        "billing=7,spanish=3",
        "12.5s",
    ]
    listed = json.loads(cli.ok("list", "--json"))
    assert [a["extension"] for a in listed] == ["0999", "1001"] and listed[1] == shown
    text = cli.ok("show", "1001")
    assert "queues:     sales (tier 2), support (tier 1)" in text and "correct horse" not in text


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("--queue", "nowhere"), "queues.0.queue"),
        (("--queue", "sales:x"), "queues.sales.tier"),
        (("--queue", "sales:12"), "queues.0.tier"),
        (("--skill", "spanish=lots"), "skills.spanish"),
        (("--skill", "Spanish=3"), "skills"),
        (("--skill", "spanish"), "skills"),
        (("--attr", "site"), "attributes"),
        (("--wrapup", "-3"), "wrapup_s"),
    ],
)
def test_add_refusals_name_the_field(cli: Cli, args: tuple[str, ...], field: str) -> None:
    err = cli.refused("add", "1001", "--name", "Ann", "--password", "pw", *args)
    assert err.startswith(f"helpline: {field}: "), err
    assert json.loads(cli.ok("list", "--json")) == []


def test_other_refusals(cli: Cli) -> None:
    assert cli.refused("add", "bad ext", "--name", "A", "--password", "pw").startswith("helpline: extension:")
    assert cli.refused("add", "1001", "--name", "Ann").startswith("helpline: password:")  # stdin is no tty
    assert cli.refused("add", "1001", "--name", "Ann", "--password-stdin", stdin="\n").startswith(
        "helpline: password: must not be empty"
    )
    cli.ok("add", "1001", "--name", "Ann", "--password", "pw")
    assert "exists already" in cli.refused("add", "1001", "--name", "Other", "--password", "pw")
    for command in (("show", "2002"), ("set", "2002", "--name", "X"), ("remove", "2002"),
                    ("passwd", "2002", "--password", "x")):  # fmt: skip
        assert cli.refused(*command).startswith("helpline: extension: no agent '2002'"), command
    assert "nothing to change" in cli.refused("set", "1001")
    bad_config = cli.config.with_name("bad.toml")
    bad_config.write_text("[queues.sales]\nsl_threshold_s = -1\n")
    result = subprocess.run([str(HELPLINE), "agent", "list", "--config", str(bad_config)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2 and "queues.sales.sl_threshold_s" in result.stderr


def test_set_passwd_remove(cli: Cli) -> None:
    cli.ok("add", "1001", "--name", "Ann", "--password", "pw", "--skill", "spanish=3", "--skill", "billing=2",
           "--attr", "site=berlin", "--queue", "sales:2", "--queue", "support", "--wrapup", "9")  # fmt: skip
    before = cli.show("1001")

    cli.ok("set", "1001", "--remove-skill", "billing", "--skill", "french=4", "--remove-queue", "support",
           "--queue", "sales:1", "--disable", "--no-wrapup")  # fmt: skip
    after = cli.show("1001")
    assert after["skills"] == {"spanish": 3, "french": 4}
    assert after["queues"] == [{"queue": "sales", "tier": 1}]
    assert after["enabled"] is False and after["wrapup_s"] is None
    assert after["display_name"] == "Ann" and after["attributes"] == {"site": "berlin"}
    assert after["created_at"] == before["created_at"] and after["updated_at"] > before["updated_at"]

    cli.ok("set", "1001", "--clear-skills", "--clear-attrs", "--clear-queues", "--enable", "--name", "Ann B")
    cleared = cli.show("1001")
    assert (cleared["skills"], cleared["attributes"], cleared["queues"]) == ({}, {}, [])
    assert cleared["enabled"] is True and cleared["display_name"] == "Ann B"
    assert cli.refused("set", "1001", "--queue", "gone").startswith("helpline: queues.0.queue:")
    assert cli.refused("set", "1001", "--wrapup", "5", "--no-wrapup").startswith("helpline: wrapup_s:")
    assert cli.show("1001") == cleared

    old = cli.ha1s("1001")
    cli.ok("passwd", "1001", "--password-stdin", stdin="n3w secret\n")
    realm, md5, sha256 = cli.ha1s("1001")
    assert realm == "example.org"
    assert md5 == hashlib.md5(b"1001:example.org:n3w secret").hexdigest() != old[1]
    assert sha256 == hashlib.sha256(b"1001:example.org:n3w secret").hexdigest()

    cli.ok("remove", "1001")
    assert json.loads(cli.ok("list", "--json")) == []
    assert cli.refused("remove", "1001").startswith("helpline: extension:")
