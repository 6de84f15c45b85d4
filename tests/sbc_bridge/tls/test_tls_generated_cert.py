"""The embedded default speaks TLS: ``resolve_tls`` generates a self-signed pair once and reuses it."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from pydantic import ValidationError

from helpline.sbc_bridge import SipSettings
from helpline.sbc_bridge.agents.settings import AgentEdgeSettings
from helpline.sbc_bridge.guard.tls import resolve_tls, server_context
from tests.sbc_bridge.edge_support import trunk


def _sans(certificate: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(certificate.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(value) for value in names.get_values_for_type(x509.DNSName)} | {
        str(value) for value in names.get_values_for_type(x509.IPAddress)
    }


def _settings(**sip: Any) -> tuple[SipSettings, AgentEdgeSettings]:
    return (
        SipSettings(host="127.0.0.1", advertised_host="sip.example.org", **sip),
        AgentEdgeSettings(host="127.0.0.1", advertised_host="10.0.0.5"),
    )


def test_generated_once_with_a_private_key_and_reused(tmp_path: Path) -> None:
    sip, agents = resolve_tls(*_settings(), tmp_path)
    certificate, key = tmp_path / "tls" / "edge.crt", tmp_path / "tls" / "edge.key"
    assert (sip.tls_certificate, sip.tls_key) == (certificate, key)
    assert (agents.tls_certificate, agents.tls_key) == (certificate, key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(certificate.parent.stat().st_mode) == 0o700
    assert _sans(certificate) == {"127.0.0.1", "sip.example.org", "10.0.0.5"}
    first = (certificate.read_bytes(), key.read_bytes(), certificate.stat().st_mtime_ns)

    again_sip, again_agents = resolve_tls(*_settings(), tmp_path)
    assert (again_sip.tls_certificate, again_agents.tls_key) == (certificate, key)
    assert (certificate.read_bytes(), key.read_bytes(), certificate.stat().st_mtime_ns) == first


def test_a_widened_key_is_made_private_again_and_kept(tmp_path: Path) -> None:
    resolve_tls(*_settings(), tmp_path)
    key = tmp_path / "tls" / "edge.key"
    before = key.read_bytes()
    key.chmod(0o644)
    resolve_tls(*_settings(), tmp_path)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.read_bytes() == before


def test_a_pair_that_does_not_match_is_made_again(tmp_path: Path) -> None:
    """A crash between writing the key and the certificate must not leave a listener that can't start."""
    resolve_tls(*_settings(), tmp_path)
    certificate, key = tmp_path / "tls" / "edge.crt", tmp_path / "tls" / "edge.key"
    resolve_tls(*_settings(), tmp_path / "elsewhere")
    key.write_bytes((tmp_path / "elsewhere" / "tls" / "edge.key").read_bytes())  # a foreign key
    before = certificate.read_bytes()
    sip, _ = resolve_tls(*_settings(), tmp_path)
    assert certificate.read_bytes() != before
    assert sip.tls_certificate is not None and sip.tls_key is not None
    server_context(sip.tls_certificate, sip.tls_key)  # loads: the new pair belongs together


def test_a_new_advertised_host_makes_a_new_certificate(tmp_path: Path) -> None:
    resolve_tls(*_settings(), tmp_path)
    certificate = tmp_path / "tls" / "edge.crt"
    before = certificate.read_bytes()
    sip, agents = _settings()
    resolve_tls(sip.model_copy(update={"advertised_host": "edge.example.net"}), agents, tmp_path)
    assert certificate.read_bytes() != before
    assert "edge.example.net" in _sans(certificate)


def test_configured_pair_and_disabled_listeners_are_left_alone(tmp_path: Path) -> None:
    mine = (tmp_path / "mine.crt", tmp_path / "mine.key")
    sip, agents = _settings(tls_certificate=mine[0], tls_key=mine[1])
    resolved_sip, resolved_agents = resolve_tls(sip, agents.model_copy(update={"tls_port": None}), tmp_path)
    assert resolved_sip == sip and resolved_agents.tls_certificate is None
    assert not (tmp_path / "tls").exists()


def test_wildcard_listen_host_is_not_a_name(tmp_path: Path) -> None:
    sip = SipSettings(host="0.0.0.0", advertised_host="203.0.113.7")
    agents = AgentEdgeSettings(host="0.0.0.0", tls_port=None)
    resolved, _ = resolve_tls(sip, agents, tmp_path)
    assert resolved.tls_certificate is not None
    names = _sans(resolved.tls_certificate)
    assert names == {"203.0.113.7"} and ipaddress.ip_address("203.0.113.7")


def test_half_configured_tls_is_refused_at_load() -> None:
    with pytest.raises(ValidationError, match="tls_certificate and tls_key must be set together"):
        SipSettings(tls_certificate=Path("a.crt"))
    with pytest.raises(ValidationError, match="tls_certificate and tls_key must be set together"):
        AgentEdgeSettings(tls_key=Path("a.key"))
    with pytest.raises(ValidationError, match="tls_client_name needs tls_client_ca"):
        trunk(tls_client_name="sbc.example")
    with pytest.raises(ValidationError, match="tls_min_version"):
        SipSettings(tls_min_version="1.1")
