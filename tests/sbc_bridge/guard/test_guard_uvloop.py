"""The guard's transport hooks under uvloop (its UDP and TCP transports are no asyncio subclasses)."""

from __future__ import annotations

import asyncio

import uvloop

from tests.sbc_bridge.guard.guard_support import TcpPeer, UdpPeer, request_bytes, start_guarded


def test_bans_connection_refusal_and_the_first_message_timeout_under_uvloop() -> None:
    async def main() -> dict[str, object]:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        edges = await start_guarded(trunk=False, tcp={"first_message_timeout_s": 0.5})
        assert edges.agents is not None
        udp, tcp = edges.agents.udp, edges.agents.tcp
        seen: dict[str, object] = {}
        banned_udp, good_udp = UdpPeer("127.0.0.40"), UdpPeer("127.0.0.41")
        try:
            for _ in range(5):
                edges.guard.auth_failed("agents", "udp", ("127.0.0.40", 5060), "1001", "wrong password")
            seen["banned udp"] = await banned_udp.ask(
                request_bytes("OPTIONS", udp, banned_udp.addr), udp, 0.7
            )
            good = await good_udp.ask(request_bytes("OPTIONS", udp, good_udp.addr), udp)
            seen["good udp"] = good.status if good else None
            refused = await TcpPeer.open("127.0.0.40", tcp)
            seen["banned tcp closed"] = await refused.closed_by_peer(2.0)
            refused.close()
            idle = await TcpPeer.open("127.0.0.42", tcp)
            seen["idle closed"] = await idle.closed_by_peer(3.0)
            idle.close()
            talker = await TcpPeer.open("127.0.0.43", tcp)
            talker.send(request_bytes("OPTIONS", tcp, talker.addr, transport="TCP"))
            answer = await talker.read(2.0)
            seen["good tcp"] = answer.status if answer else None
            talker.close()
        finally:
            banned_udp.close()
            good_udp.close()
            await edges.stop()
        return seen

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        seen = runner.run(main())
    assert seen == {
        "banned udp": None,
        "good udp": 200,
        "banned tcp closed": True,
        "idle closed": True,
        "good tcp": 200,
    }
