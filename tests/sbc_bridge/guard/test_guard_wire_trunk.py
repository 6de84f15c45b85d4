"""The guard on the trunk listener, over the wire: floods, capacity, strangers (A1, A6, A7, A12)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

from tests.sbc_bridge.edge_support import DID_NATIONAL
from tests.sbc_bridge.guard.guard_support import GuardedEdges, TcpPeer, UdpPeer, request_bytes
from tests.support.rtp_probe import make_sdp_offer
from tests.support.sip_uac import SipUac

TRUNK_IP = "127.0.0.1"  # the harness's trunk source


def _flood(
    ip: str, target: tuple[str, int], method: str, pps: int, seconds: float, stop: threading.Event
) -> int:
    """Send ``pps`` distinct requests a second from ``ip`` (in a thread: the edge keeps its loop)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((ip, 0))
    template = request_bytes(method, target, sock.getsockname(), call_id="flood-CALL@x").replace(
        b"branch=z9hG4bK", b"branch=z9hG4bKNUM"
    )
    sent, start = 0, time.monotonic()
    try:
        while not stop.is_set() and (elapsed := time.monotonic() - start) < seconds:
            while sent < int(elapsed * pps):
                number = b"%d" % sent
                sock.sendto(template.replace(b"NUM", number).replace(b"CALL", number), target)
                sent += 1
            time.sleep(0.002)
    finally:
        sock.close()
    return sent


async def test_a_udp_flood_is_banned_within_2s_while_the_trunk_call_is_answered(guarded) -> None:
    edges: GuardedEdges = await guarded(agents=False)
    assert edges.trunk is not None
    target = edges.trunk.udp
    stop = threading.Event()
    started = time.monotonic()
    flood = asyncio.create_task(asyncio.to_thread(_flood, "127.0.0.2", target, "INVITE", 5000, 4.0, stop))
    try:
        await asyncio.sleep(0.3)  # the flood is on
        async with await SipUac.open(TRUNK_IP) as uac:
            call = await uac.invite(f"sip:{DID_NATIONAL}@{target[0]}:{target[1]}", sdp=make_sdp_offer(40100))
            assert call.status == 200
            assert await call.bye() == 200
        banned, banned_at = await edges.events.first("security.banned", 2.0, key="127.0.0.2")
    finally:
        stop.set()
        sent = await flood
    assert banned["reason"] == "flood"
    assert banned_at - started < 2.0, f"banned after {banned_at - started:.2f}s"
    assert sent > 1000
    ban = edges.guard.bans.check("127.0.0.2")
    assert ban is not None and ban.kind == "source"
    # a flood is reported a few times, never once per packet
    assert len(edges.events.seen) < 20, edges.events.kinds()
    assert len(edges.events.of("security.banned_traffic")) == 1
    assert edges.guard.bans.check(TRUNK_IP) is None


async def test_trunk_options_stay_200_while_invites_over_the_global_budget_get_503(guarded) -> None:
    edges: GuardedEdges = await guarded(
        agents=False,
        rates={
            "INVITE": {"per_source": 1, "burst": 1, "global": 2},
            "OPTIONS": {"per_source": 1, "burst": 1, "global": 1},
        },
    )
    assert edges.trunk is not None
    target = edges.trunk.udp
    async with await SipUac.open(TRUNK_IP) as uac:
        calls = await asyncio.gather(
            *(
                uac.invite(f"sip:{DID_NATIONAL}@{target[0]}:{target[1]}", sdp=make_sdp_offer(40200 + 2 * i))
                for i in range(4)
            )
        )
        statuses = sorted(call.status for call in calls)
        assert statuses == [200, 200, 503, 503]
        for call in calls:
            if call.status == 503:
                assert call.final is not None and call.final.header("retry-after") == "5"
                assert call.final.reason == "Service Unavailable"
            else:
                assert await call.bye() == 200
    peer = UdpPeer(TRUNK_IP)
    try:
        for _ in range(10):
            reply = await peer.ask(request_bytes("OPTIONS", target, peer.addr), target)
            assert reply is not None and reply.status == 200
    finally:
        peer.close()
    assert edges.events.of("security.rate_limited")[0]["action"] == "503"


async def test_strangers_get_nothing_for_what_a_trunk_gets_513_for(guarded) -> None:
    edges: GuardedEdges = await guarded(agents=False)
    assert edges.trunk is not None
    target = edges.trunk.udp
    pad = [(f"X-Pad-{i}", "x") for i in range(120)]
    trunk, stranger = UdpPeer(TRUNK_IP), UdpPeer("127.0.0.3")
    try:
        reply = await trunk.ask(request_bytes("OPTIONS", target, trunk.addr, extra=pad), target)
        assert reply is not None and (reply.status, reply.reason) == (513, "Message Too Large")
        assert (
            await stranger.ask(request_bytes("OPTIONS", target, stranger.addr, extra=pad), target, 1.0)
            is None
        )
        oversize = request_bytes("OPTIONS", target, trunk.addr, body=b"x" * 9000)
        assert await trunk.ask(oversize, target, 1.0) is None  # over the UDP cap: dropped unparsed
    finally:
        trunk.close()
        stranger.close()
    caps = [data.get("cap") for data in edges.events.of("security.oversize")]
    assert caps.count("headers") == 2 and any(
        d.get("size", 0) > 9000 for d in edges.events.of("security.oversize")
    )


async def test_a_source_banned_on_one_listener_is_refused_on_the_other(guarded) -> None:
    edges: GuardedEdges = await guarded(agents=True)
    assert edges.trunk is not None and edges.agents is not None
    for _ in range(5):
        edges.guard.auth_failed("agents", "udp", ("127.0.0.4", 5060), "1001", "wrong password")
    assert edges.guard.bans.check("127.0.0.4") is not None
    peer = await TcpPeer.open("127.0.0.4", edges.trunk.tcp)
    try:
        assert await peer.closed_by_peer(2.0)
    finally:
        peer.close()
    assert edges.events.of("security.tcp_refused")[0]["reason"] == "banned"
