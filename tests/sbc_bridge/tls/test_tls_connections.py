"""TLS connections that never speak (A13 on the TLS port): the handshake and the guard bound them.

A connection that never completes a handshake is closed after ``handshake_timeout_s``; one that
completes it is the TCP transport's from then on, with the guard's per-source cap on idle
connections and its first-message timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from helpline.sbc_bridge import SipSettings
from helpline.sbc_bridge.guard import EdgeGuard, SecuritySettings
from helpline.sbc_bridge.guard.tls import TlsContexts
from helpline.sbc_bridge.transport_tls import EdgeTlsTransport
from tests.sbc_bridge.tls.tls_support import TlsSipClient, client_context

Events = list[tuple[str, dict[str, Any]]]


@pytest.fixture
def events() -> Events:
    return []


@pytest.fixture
async def listener(sip_tls: SipSettings, events: Events) -> AsyncIterator[EdgeTlsTransport]:
    assert sip_tls.tls_certificate is not None and sip_tls.tls_key is not None
    guard = EdgeGuard(
        SecuritySettings(tcp={"unauthenticated_per_source": 2, "first_message_timeout_s": 1.0}),
        on_event=lambda kind, data: events.append((kind, data)),
    )
    transport = EdgeTlsTransport(
        local_addr=("127.0.0.1", 0),
        tls=TlsContexts(sip_tls.tls_certificate, sip_tls.tls_key),
        handshake_timeout_s=0.5,
        guard=guard,
        listener="agents",
    )
    await transport.start()
    yield transport
    await transport.stop()


async def test_no_handshake_is_closed_after_the_handshake_timeout(listener: EdgeTlsTransport) -> None:
    reader, writer = await asyncio.open_connection(*listener.local_addr)
    try:
        async with asyncio.timeout(5):  # without a handshake timeout this read would never end
            assert await reader.read() == b""
    finally:
        writer.close()


async def test_idle_tls_connections_are_capped_per_source(listener: EdgeTlsTransport, events: Events) -> None:
    context = client_context()
    idle = [await TlsSipClient.connect(listener.local_addr, context) for _ in range(2)]
    third = await TlsSipClient.connect(listener.local_addr, context)
    try:
        async with asyncio.timeout(5):
            await third.closed.wait()
        assert not idle[0].closed.is_set() and not idle[1].closed.is_set()
        refused = [data for kind, data in events if kind == "security.tcp_refused"]
        assert refused and refused[0]["transport"] == "tls"
    finally:
        for client in [*idle, third]:
            await client.close()


async def test_a_silent_tls_connection_is_closed_but_a_talking_one_stays(listener: EdgeTlsTransport) -> None:
    context = client_context()
    silent = await TlsSipClient.connect(listener.local_addr, context)
    talking = await TlsSipClient.connect(listener.local_addr, context)
    try:
        host, port = listener.local_addr
        talking.send(talking.request("OPTIONS", f"sip:{host}:{port}"))
        async with asyncio.timeout(5):
            await silent.closed.wait()
        await asyncio.sleep(0.5)
        assert not talking.closed.is_set()
    finally:
        await silent.close()
        await talking.close()
