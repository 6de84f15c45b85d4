"""The guard on the agent listener, over the wire: cracking, locks, caps, scanners, TCP (A2-A4, A12, A13)."""

from __future__ import annotations

import asyncio
import time

from tests.sbc_bridge.agents.agent_support import PASSWORDS
from tests.sbc_bridge.agents.raw_agent import RawAgent, digest_answer, digest_params
from tests.sbc_bridge.guard.guard_support import GuardedEdges, TcpPeer, UdpPeer, raw_agent_at, request_bytes
from tests.support.sip_uac import SipMessage


async def _agents(guarded, **security: object) -> tuple[GuardedEdges, tuple[str, int]]:  # type: ignore[no-untyped-def]
    edges: GuardedEdges = await guarded(trunk=False, **security)
    assert edges.agents is not None
    return edges, edges.agents.udp


async def test_five_wrong_answers_ban_the_source_which_then_gets_no_reply_at_all(guarded) -> None:
    edges, registrar = await _agents(guarded)
    cracker = await raw_agent_at("127.0.0.5", registrar)
    bystander = await raw_agent_at("127.0.0.6", registrar)
    try:
        for _ in range(5):
            assert (await cracker.register("1001", "guess")).status == 401
        banned, _ = await edges.events.first("security.banned", 2.0, key="127.0.0.5")
        assert banned["reason"] == "auth_failures"
        assert len(edges.events.of("security.agent_auth_failed")) == 5
        probe = UdpPeer("127.0.0.5")
        try:
            for method in ("REGISTER", "OPTIONS", "INVITE"):
                assert await probe.ask(request_bytes(method, registrar, probe.addr), registrar, 0.7) is None
        finally:
            probe.close()
        # another address is unaffected: its agent registers
        assert (await bystander.register("1002", PASSWORDS["1002"])).status == 200
    finally:
        cracker.close()
        bystander.close()


def _shape(response: SipMessage) -> tuple[object, ...]:
    """What a 401 looks like apart from its nonce and tags."""
    challenges = [
        {k: v for k, v in digest_params(c).items() if k != "nonce"} for c in response.all("www-authenticate")
    ]
    return response.status, response.reason, [name for name, _ in response.headers], challenges


async def test_twenty_failures_from_several_sources_lock_the_user_and_its_password_then_gets_the_same_401(
    guarded,
) -> None:
    edges, registrar = await _agents(guarded)
    agents = [await raw_agent_at(f"127.0.0.{10 + i}", registrar) for i in range(5)]
    right, wrong, other = [await raw_agent_at(f"127.0.0.{20 + i}", registrar) for i in range(3)]
    try:
        for agent in agents:  # 4 each: no source reaches its ban threshold of 5
            for _ in range(4):
                assert (await agent.register("1001", "guess")).status == 401
        locked, _ = await edges.events.first("security.user_locked", 2.0, user="1001")
        assert locked["kind"] == "user" and locked["reason"] == "user_auth_failures"
        assert not edges.events.of("security.banned")
        with_right = await right.register("1001", PASSWORDS["1001"])
        with_wrong = await wrong.register("1001", "guess")
        assert with_right.status == 401 and _shape(with_right) == _shape(with_wrong)
        assert edges.events.of("security.agent_auth_failed")[-2]["reason"] == "user locked"
        assert edges.agents is not None and edges.agents.edge.bindings("1001") == ()
        # only 1001 is locked
        assert (await other.register("1002", PASSWORDS["1002"])).status == 200
    finally:
        for agent in (*agents, right, wrong, other):
            agent.close()


async def test_oversize_datagrams_too_many_headers_and_scanners(guarded) -> None:
    edges, registrar = await _agents(guarded)
    peer = UdpPeer("127.0.0.7")
    try:
        oversize = request_bytes("OPTIONS", registrar, peer.addr, body=b"x" * 9000)
        assert await peer.ask(oversize, registrar, 1.0) is None
        event, _ = await edges.events.first("security.oversize", 1.0)
        assert (event["cap"], event["size"], event["limit"]) == ("udp_message_bytes", len(oversize), 8192)
        padded = request_bytes(
            "OPTIONS", registrar, peer.addr, extra=[(f"X-Pad-{i}", "x") for i in range(120)]
        )
        reply = await peer.ask(padded, registrar)
        assert reply is not None and (reply.status, reply.reason) == (513, "Message Too Large")
        scan = request_bytes("OPTIONS", registrar, peer.addr, user_agent="friendly-scanner")
        assert await peer.ask(scan, registrar, 1.0) is None
        assert edges.events.of("security.scanner")[0]["signature"] == "friendly-scanner"
        await peer.send(b"\r\n\r\n", registrar)  # a NAT keepalive: no answer, nothing reported
        plain = await peer.ask(request_bytes("OPTIONS", registrar, peer.addr, user_agent="Zoiper"), registrar)
        assert plain is not None and plain.status == 200  # none of that banned the source
        assert edges.agents is not None and not edges.agents.security_of("security.malformed")
    finally:
        peer.close()


async def _register_over_tcp(ip: str, target: tuple[str, int], extension: str) -> SipMessage | None:
    peer = await TcpPeer.open(ip, target)
    try:
        uri = f"sip:{target[0]}:{target[1]}"
        peer.send(
            request_bytes(
                "REGISTER", target, peer.addr, transport="TCP", user=extension, extra=[("Expires", "60")]
            )
        )
        challenge = await peer.read(3.0)
        assert challenge is not None and challenge.status == 401
        params = RawAgent.challenge(challenge, "MD5")
        auth = digest_answer(
            params, method="REGISTER", uri=uri, username=extension, password=PASSWORDS[extension]
        )
        extra = [("Expires", "60"), ("Authorization", auth)]
        peer.send(request_bytes("REGISTER", target, peer.addr, transport="TCP", user=extension, extra=extra))
        return await peer.read(3.0)
    finally:
        peer.close()


async def test_a_source_holding_32_idle_connections_is_refused_a_33rd_while_another_registers(
    guarded,
) -> None:
    edges, _ = await _agents(guarded)
    assert edges.agents is not None
    target = edges.agents.tcp
    idle = [await TcpPeer.open("127.0.0.30", target) for _ in range(32)]
    try:
        await edges.events.wait(
            lambda: edges.guard.pending_connections("127.0.0.30") == 32, 3.0, "32 pending"
        )
        extra = await TcpPeer.open("127.0.0.30", target)
        try:
            assert await extra.closed_by_peer(2.0)
        finally:
            extra.close()
        refused, _ = await edges.events.first("security.tcp_refused", 1.0)
        assert refused["source"].startswith("127.0.0.30:")
        reply = await _register_over_tcp("127.0.0.31", target, "1001")
        assert reply is not None and reply.status == 200
        assert [b.source[0] for b in edges.agents.edge.bindings("1001")] == ["127.0.0.31"]
        assert not await idle[0].closed_by_peer(0.2)  # the 32 themselves are still held
    finally:
        for peer in idle:
            peer.close()


async def test_an_idle_connection_is_closed_after_the_first_message_timeout(guarded) -> None:
    edges, _ = await _agents(guarded, tcp={"first_message_timeout_s": 1.0})
    assert edges.agents is not None
    target = edges.agents.tcp
    silent = await TcpPeer.open("127.0.0.32", target)
    talker = await TcpPeer.open("127.0.0.33", target)
    try:
        opened = time.monotonic()
        silent.send(b"\r\n\r\n")  # keepalives are not SIP: they do not validate the connection
        talker.send(request_bytes("OPTIONS", target, talker.addr, transport="TCP"))
        first = await talker.read(2.0)
        assert first is not None and first.status == 200
        assert await silent.closed_by_peer(3.0)
        assert time.monotonic() - opened >= 0.9
        await asyncio.sleep(0.5)  # past the timeout: the talker's connection stays
        talker.send(request_bytes("OPTIONS", target, talker.addr, transport="TCP"))
        second = await talker.read(2.0)
        assert second is not None and second.status == 200
        await edges.events.wait(lambda: edges.guard.pending_connections("127.0.0.32") == 0, 2.0, "released")
    finally:
        silent.close()
        talker.close()


async def test_a_stream_message_over_the_cap_gets_513_and_the_connection_closes(guarded) -> None:
    edges, _ = await _agents(guarded, caps={"stream_message_bytes": 2048})
    assert edges.agents is not None
    target = edges.agents.tcp
    peer = await TcpPeer.open("127.0.0.34", target)
    try:
        peer.send(request_bytes("OPTIONS", target, peer.addr, transport="TCP", body=b"x" * 4000))
        reply = await peer.read(2.0)
        assert reply is not None and (reply.status, reply.reason) == (513, "Message Too Large")
        assert reply.header("call-id") is not None  # addressed to the request
        assert await peer.closed_by_peer(2.0)
    finally:
        peer.close()
    event, _ = await edges.events.first("security.oversize", 1.0)
    assert (event["transport"], event["cap"], event["limit"]) == ("tcp", "stream_message_bytes", 2048)
    assert event["size"] > 4000
