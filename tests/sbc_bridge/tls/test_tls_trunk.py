"""The trunk edge over TLS (A14): calls work, old protocols and non-forward-secret suites do not."""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from helpline.sbc_bridge import SipSettings
from tests.sbc_bridge.edge_support import DID, Edge
from tests.sbc_bridge.tls.tls_support import SDP_OFFER, TlsSipClient, client_context

MakeEdge = Callable[..., Awaitable[Edge]]


async def test_options_over_tls(make_edge: MakeEdge, sip_tls: SipSettings, edge_cert: Path) -> None:
    edge = await make_edge(settings=sip_tls)
    server = edge.bridge.local_addresses["tls"]
    client = await TlsSipClient.connect(server, client_context(cafile=edge_cert))
    try:
        response = await client.response(client.request("OPTIONS", f"sip:{server[0]}:{server[1]}"))
        assert response.status == 200
        assert client.tls_version in ("TLSv1.2", "TLSv1.3")
    finally:
        await client.close()


async def test_invite_ack_bye_over_tls(make_edge: MakeEdge, sip_tls: SipSettings, edge_cert: Path) -> None:
    edge = await make_edge(settings=sip_tls)
    server = edge.bridge.local_addresses["tls"]
    client = await TlsSipClient.connect(server, client_context(cafile=edge_cert))
    try:
        uri = f"sip:{DID}@{server[0]}:{server[1]}"
        call_id = uuid.uuid4().hex
        invite = client.request("INVITE", uri, call_id=call_id, body=SDP_OFFER)
        ok = await client.response(invite, timeout=10)
        assert ok.status == 200, ok.raw
        contact = ok.header("contact") or ""
        assert "transport=tls" in contact, contact  # the carrier keeps the dialog on TLS
        (call,) = edge.calls
        assert call.transport == "tls" and call.did == DID and call.sdp_offer == SDP_OFFER
        to = ok.header("to") or ""
        client.send(client.request("ACK", uri, call_id=call_id, to=to, cseq=1))
        bye = await client.response(client.request("BYE", uri, call_id=call_id, to=to, cseq=2))
        assert bye.status == 200
        await edge.wait_ended(1, within=5)
        assert edge.ends[call.sip_call_id].by == "remote_bye"
    finally:
        await client.close()


# The server aborts a failed handshake, so the client sees a reset as often as the alert: a refusal
# is either. What makes each refusal mean something is its control: the same client construction,
# one setting changed, gets through (and tests/sbc_bridge/tls/test_tls_scan.py names the reasons).
REFUSED = (ssl.SSLError, ConnectionError)


async def _handshake(server: tuple[str, int], context: ssl.SSLContext) -> str:
    """The negotiated version, or "refused"."""
    try:
        client = await TlsSipClient.connect(server, context)
    except REFUSED:
        return "refused"
    try:
        response = await client.response(client.request("OPTIONS", f"sip:{server[0]}:{server[1]}"))
        assert response.status == 200
        return client.tls_version or "?"
    finally:
        await client.close()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize(
    ("version", "outcome"),
    [
        (ssl.TLSVersion.TLSv1, "refused"),
        (ssl.TLSVersion.TLSv1_1, "refused"),
        (ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
        (ssl.TLSVersion.TLSv1_3, "TLSv1.3"),
    ],
)
async def test_only_tls_1_2_and_later(
    make_edge: MakeEdge, sip_tls: SipSettings, version: ssl.TLSVersion, outcome: str
) -> None:
    edge = await make_edge(settings=sip_tls)
    # the client offers every suite it has at security level 0, so only the version can refuse it
    context = client_context(version=version, ciphers="ALL")
    assert await _handshake(edge.bridge.local_addresses["tls"], context) == outcome


async def test_min_version_1_3_refuses_1_2(make_edge: MakeEdge, sip_tls: SipSettings) -> None:
    edge = await make_edge(settings=sip_tls.model_copy(update={"tls_min_version": "1.3"}))
    server = edge.bridge.local_addresses["tls"]
    assert await _handshake(server, client_context(version=ssl.TLSVersion.TLSv1_2)) == "refused"
    assert await _handshake(server, client_context(version=ssl.TLSVersion.TLSv1_3)) == "TLSv1.3"


@pytest.mark.parametrize(
    ("suite", "outcome"),
    [
        ("AES128-GCM-SHA256", "refused"),  # RSA key exchange: a stolen key decrypts recordings
        ("AES256-GCM-SHA384", "refused"),
        ("AES256-SHA256", "refused"),
        ("AES128-SHA", "refused"),
        ("DHE-RSA-AES128-GCM-SHA256", "refused"),  # finite-field DHE: not offered either
        ("ECDHE-RSA-AES128-SHA", "refused"),  # forward-secret but CBC with SHA-1: not offered
        ("ECDHE-RSA-AES128-GCM-SHA256", "TLSv1.2"),
        ("ECDHE-RSA-AES256-GCM-SHA384", "TLSv1.2"),
        ("ECDHE-RSA-CHACHA20-POLY1305", "TLSv1.2"),
    ],
)
async def test_tls12_suites_are_forward_secret_only(
    make_edge: MakeEdge, sip_tls: SipSettings, suite: str, outcome: str
) -> None:
    edge = await make_edge(settings=sip_tls)
    context = client_context(version=ssl.TLSVersion.TLSv1_2, ciphers=suite)
    assert await _handshake(edge.bridge.local_addresses["tls"], context) == outcome


async def test_plain_sip_on_the_tls_port_gets_nothing(make_edge: MakeEdge, sip_tls: SipSettings) -> None:
    """Cleartext SIP sent to the TLS port is a failed handshake: no SIP answer, the connection closes."""
    edge = await make_edge(settings=sip_tls)
    host, port = edge.bridge.local_addresses["tls"]
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n")
        async with asyncio.timeout(5):
            data = await reader.read()
        assert b"SIP/2.0" not in data
    finally:
        writer.close()
    assert edge.calls == []
