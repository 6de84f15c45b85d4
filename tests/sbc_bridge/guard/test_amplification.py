"""OPTIONS on the agent listener is never answered with more bytes than it came with (A1)."""

from __future__ import annotations

import asyncio
import os

from tests.sbc_bridge.guard.guard_support import GuardedEdges, UdpPeer, request_bytes
from tests.support.sip_uac import build_message, parse_message


async def _reply_bytes(peer: UdpPeer, data: bytes, target: tuple[str, int], within: float) -> bytes | None:
    await peer.send(data, target)
    try:
        async with asyncio.timeout(within):
            return await asyncio.get_running_loop().sock_recv(peer.sock, 65535)
    except TimeoutError:
        return None


def _minimal_options(target: tuple[str, int], local: tuple[str, int]) -> bytes:
    """The smallest OPTIONS a reflection attacker would send: only the mandatory headers, short."""
    return build_message(
        f"OPTIONS sip:{target[0]} SIP/2.0",
        [
            ("v", f"SIP/2.0/UDP {local[0]}:{local[1]};branch=z9hG4bK{os.urandom(3).hex()}"),
            ("f", f"<sip:{local[0]}>;tag=1"),
            ("t", f"<sip:{target[0]}>"),
            ("i", os.urandom(2).hex()),
            ("CSeq", "1 OPTIONS"),
        ],
    )


async def test_a_phone_keepalive_gets_the_full_answer_and_a_bare_probe_no_bigger_answer(guarded) -> None:  # type: ignore[no-untyped-def]
    edges: GuardedEdges = await guarded(trunk=False)
    assert edges.agents is not None
    target = edges.agents.udp
    peer = UdpPeer("127.0.0.40")
    try:
        phone = request_bytes(  # a desk phone's keepalive, with the headers such phones send
            "OPTIONS", target, peer.addr, user_agent="Yealink SIP-T46U 108.86.0.20",
            extra=[
                ("Accept", "application/sdp"),
                ("Allow", "INVITE, ACK, OPTIONS, CANCEL, BYE, SUBSCRIBE, NOTIFY, INFO, REFER, UPDATE"),
                ("Supported", "replaces, timer"),
            ],
        )  # fmt: skip
        answer = await _reply_bytes(peer, phone, target, 2.0)
        assert answer is not None and len(answer) <= len(phone)
        parsed = parse_message(answer)
        assert parsed.status == 200 and parsed.header("allow")

        tiny = _minimal_options(target, peer.addr)
        assert len(tiny) < 200
        answer = await _reply_bytes(peer, tiny, target, 1.0)
        assert answer is None or len(answer) <= len(tiny), (len(tiny), answer)
        assert edges.guard.dropped[("agents", "amplification")] == (1 if answer is None else 0)
    finally:
        peer.close()
