"""Mutual TLS per trunk (A14): a trunk with ``tls_client_ca`` only talks to certificates its CA signed.

Two trunks, each with its own CA and source address (127.0.0.1 and 127.0.0.2), and a third CA that
no trunk names. Every refusal has its control: the same client, with the right certificate or from
the right address, is answered.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from helpline.sbc_bridge import SipSettings
from tests.sbc_bridge.edge_support import Edge, trunk
from tests.sbc_bridge.tls.tls_support import Issued, TestCa, TlsSipClient, client_context

MakeEdge = Callable[..., Awaitable[Edge]]
CARRIER_NAME = "sbc.carrier.example"


@pytest.fixture
def cas(tmp_path: Path) -> dict[str, TestCa]:
    return {name: TestCa(tmp_path / "pki", name) for name in ("carrier", "other", "stranger")}


@pytest.fixture
async def edge(make_edge: MakeEdge, sip_tls: SipSettings, cas: dict[str, TestCa]) -> Edge:
    trunks = [
        trunk(tls_client_ca=cas["carrier"].pem, tls_client_name=CARRIER_NAME),
        trunk(name="other", sources=("127.0.0.2/32",), tls_client_ca=cas["other"].pem),
        trunk(name="plain", sources=("127.0.0.3/32",)),
    ]
    return await make_edge(settings=sip_tls, trunks=trunks)


async def _outcome(edge: Edge, client_cert: Issued | None, source: str) -> str:
    """Whether an OPTIONS over the connection gets its 200 ("answered") or not ("refused")."""
    server = edge.bridge.local_addresses["tls"]
    try:
        client = await TlsSipClient.connect(server, client_context(client=client_cert), local_host=source)
    except (ssl.SSLError, ConnectionError):
        return "refused"  # the handshake itself failed
    try:
        client.send(client.request("OPTIONS", f"sip:{server[0]}:{server[1]}"))
        try:
            response = await client.wait_for(lambda m: m.is_response and m.status >= 200, timeout=5)
        except AssertionError:
            if client.closed.is_set():  # closed by the edge with no answer (TLS 1.3: after the handshake)
                return "refused"
            raise
        return "answered" if response.status == 200 else f"answered {response.status}"
    finally:
        await client.close()


def _refusals(edge: Edge) -> list[dict[str, object]]:
    return [data for kind, data in edge.security if kind == "security.tls_refused"]


async def test_certificate_from_the_trunks_ca_is_answered(edge: Edge, cas: dict[str, TestCa]) -> None:
    good = cas["carrier"].issue("carrier-sbc", dns=(CARRIER_NAME,))
    assert await _outcome(edge, good, "127.0.0.1") == "answered"
    assert _refusals(edge) == []


async def test_no_certificate_is_refused_with_an_event(edge: Edge, cas: dict[str, TestCa]) -> None:
    assert await _outcome(edge, None, "127.0.0.1") == "refused"
    (event,) = _refusals(edge)
    assert event["trunk"] == "carrier" and event["reason"] == "no client certificate"
    assert event["transport"] == "tls" and str(event["source"]).startswith("127.0.0.1:")


async def test_certificate_from_an_unknown_ca_is_refused(edge: Edge, cas: dict[str, TestCa]) -> None:
    rogue = cas["stranger"].issue("rogue", dns=(CARRIER_NAME,))
    assert await _outcome(edge, rogue, "127.0.0.1") == "refused"
    assert edge.calls == []


async def test_another_trunks_certificate_is_refused(edge: Edge, cas: dict[str, TestCa]) -> None:
    """OpenSSL accepts the "other" trunk's CA (it is configured), the source address decides."""
    others = cas["other"].issue("other-sbc", dns=(CARRIER_NAME,))
    assert await _outcome(edge, others, "127.0.0.1") == "refused"
    (event,) = _refusals(edge)
    assert event["trunk"] == "carrier" and "not signed by the CA of trunk carrier" in str(event["reason"])
    # control: from its own trunk's address the same certificate is answered
    assert await _outcome(edge, others, "127.0.0.2") == "answered"


async def test_certificate_without_the_configured_name_is_refused(edge: Edge, cas: dict[str, TestCa]) -> None:
    unnamed = cas["carrier"].issue("carrier-sbc", dns=("somewhere.else.example",))
    assert await _outcome(edge, unnamed, "127.0.0.1") == "refused"
    (event,) = _refusals(edge)
    assert event["reason"] == f"client certificate does not name {CARRIER_NAME}"


async def test_trunk_without_mutual_tls_needs_no_certificate(edge: Edge) -> None:
    assert await _outcome(edge, None, "127.0.0.3") == "answered"
    assert _refusals(edge) == []
