"""Configuration: TOML file, environment overrides, errors that name the key, secrets kept out of output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpline.config import ConfigError, load_settings


def test_defaults_are_the_embedded_service() -> None:
    s = load_settings()
    assert (s.sip.host, s.sip.port, s.sip.transports) == ("127.0.0.1", 5060, ("udp", "tcp"))
    assert (s.http.host, s.http.port) == ("127.0.0.1", 8080)
    assert s.database_url.startswith("sqlite+aiosqlite:///") and s.database_url.endswith("helpline.sqlite3")
    assert s.flows_dir.name == "flows" and (s.flows_dir / "demo.yaml").is_file()
    assert [t.name for t in s.trunks] == ["loopback"]
    assert s.trunks[0].dids == {"+18005550100": "demo", "+18005550101": "recorded_support"}


def test_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "h.toml"
    cfg.write_text('[sip]\nport = 5080\n[policy]\nblocked_countries = ["+7"]\n'
                   '[[trunks]]\nname = "a"\nsources = ["192.0.2.1"]\ndids = { "+4930123456" = "demo" }\n')
    s = load_settings(cfg)
    assert s.sip.port == 5080 and s.policy.blocked_countries == ("+7",) and s.trunks[0].name == "a"
    monkeypatch.setenv("HELPLINE_SIP__PORT", "5090")
    monkeypatch.setenv("HELPLINE_POLICY__BLOCKED_COUNTRIES", '["+850"]')
    s = load_settings(cfg)
    assert s.sip.port == 5090 and s.policy.blocked_countries == ("+850",)


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[sip]\nport = "abc"\n', "sip.port"),
        ("[media]\nrtp_port_min = 5\n", "media.rtp_port_min"),
        ('[sip]\nnon_trunk_policy = "ignore"\n', "sip.non_trunk_policy"),
        ('[[trunks]]\nname = "x"\nsources = ["not-an-ip"]\n', "trunks[0].sources"),
        ('[policy]\nblocked_countries = ["7"]\n', "policy.blocked_countries"),
        ("[sip]\nsurprise = 1\n", "sip.surprise"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, toml: str, key: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert key in str(err.value) and str(cfg) in str(err.value)


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    cfg = tmp_path / "broken.toml"
    cfg.write_text("[sip]\nport = 5060\n[media\n")
    with pytest.raises(ConfigError, match=r"line 3"):
        load_settings(cfg)


def test_cli_prints_config_without_secrets_and_exits_2_on_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "h.toml"
    cfg.write_text('[[trunks]]\nname = "a"\nsources = ["192.0.2.1"]\n'
                   '[trunks.credentials]\nusername = "u"\npassword = "hunter2"\nrealm = "r"\n')
    out = subprocess.run([sys.executable, "-m", "helpline", "config", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60, check=True)
    assert "hunter2" not in out.stdout
    assert json.loads(out.stdout)["trunks"][0]["credentials"]["username"] == "u"
    cfg.write_text('[http]\nport = 99999\n')
    bad = subprocess.run([sys.executable, "-m", "helpline", "config", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "http.port" in bad.stderr
