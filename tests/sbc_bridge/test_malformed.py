"""Malformed traffic and retransmissions, sent from raw sockets while real calls go on."""

from __future__ import annotations

import asyncio
import socket

from helpline.sbc_bridge import InboundCall
from tests.sbc_bridge.edge_support import DID_NATIONAL, SCENARIOS, Edge
from tests.support.sipp import run_sipp


def invite(
    port: int,
    *,
    branch: str = "z9hG4bKraw1",
    call_id: str = "raw-1@127.0.0.1",
    drop: str = "",
    content_length: str | None = None,
    local_port: int = 0,
) -> bytes:
    body = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    )
    headers = [
        ("Via", f"SIP/2.0/UDP 127.0.0.1:{local_port};branch={branch};rport"),
        ("From", "<sip:2125550100@127.0.0.1>;tag=rawtag"),
        ("To", f"<sip:{DID_NATIONAL}@127.0.0.1>"),
        ("Call-ID", call_id),
        ("CSeq", "1 INVITE"),
        ("Contact", f"<sip:raw@127.0.0.1:{local_port}>"),
        ("Max-Forwards", "70"),
        ("Content-Type", "application/sdp"),
        ("Content-Length", content_length if content_length is not None else str(len(body))),
    ]
    lines = [f"INVITE sip:{DID_NATIONAL}@127.0.0.1:{port} SIP/2.0"]
    lines += [f"{name}: {value}" for name, value in headers if name != drop]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


class Udp:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    async def send(self, data: bytes, target: tuple[str, int]) -> None:
        await asyncio.get_running_loop().sock_sendto(self.sock, data, target)

    async def recv(self, within: float = 3.0) -> str | None:
        try:
            async with asyncio.timeout(within):
                data = await asyncio.get_running_loop().sock_recv(self.sock, 65535)
        except TimeoutError:
            return None
        return data.decode()


def ack_for(reply: str, port: int, local_port: int) -> bytes:
    """ACK for a final non-2xx answer to ``invite``: same branch, the answer's To (RFC 3261 17.1.1.3)."""
    fields = dict(line.split(": ", 1) for line in reply.split("\r\n")[1:] if ": " in line)
    lines = [
        f"ACK sip:{DID_NATIONAL}@127.0.0.1:{port} SIP/2.0",
        f"Via: {fields['Via']}",
        f"From: {fields['From']}",
        f"To: {fields['To']}",
        f"Call-ID: {fields['Call-ID']}",
        "CSeq: 1 ACK",
        "Max-Forwards: 70",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_udp_invite_without_cseq_gets_400_naming_cseq_while_a_call_completes(make_edge) -> None:
    edge: Edge = await make_edge()
    raw = Udp()
    call = asyncio.create_task(
        run_sipp(SCENARIOS / "uac_basic.xml", edge.udp, service=DID_NATIONAL, keys={"caller": "2125550100"})
    )
    await raw.send(invite(edge.udp[1], drop="CSeq", local_port=raw.port), edge.udp)  # no CSeq: no Timer G
    reply = await raw.recv()
    assert reply is not None and reply.startswith("SIP/2.0 400 ")
    assert 'Warning: 399 - "missing CSeq header"' in reply
    garbage = invite(
        edge.udp[1], branch="z9hG4bKraw2", call_id="raw-2", content_length="abc", local_port=raw.port
    )
    await raw.send(garbage, edge.udp)
    reply = await raw.recv()
    assert reply is not None and reply.startswith("SIP/2.0 400 ") and "Content-Length" in reply
    await raw.send(ack_for(reply, edge.udp[1], raw.port), edge.udp)  # stops Timer G retransmitting the 400
    while await raw.recv(within=1.0) is not None:
        pass
    await raw.send(b"\x00\x01garbage that is not SIP", edge.udp)  # no Via: nothing to answer
    assert await raw.recv(within=1.0) is None
    result = await call
    assert result.returncode == 0, result.explain()
    malformed = [data for kind, data in edge.security if kind == "security.malformed"]
    assert [m.get("header") for m in malformed[:2]] == ["CSeq", "Content-Length"]
    assert len(malformed) == 3 and len(edge.calls) == 1


async def test_tcp_garbage_content_length_gets_400_and_the_listener_survives(make_edge) -> None:
    edge: Edge = await make_edge()
    reader, writer = await asyncio.open_connection(*edge.tcp)
    writer.write(invite(edge.tcp[1], content_length="twelve").replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP"))
    await writer.drain()
    async with asyncio.timeout(5):
        reply = (await reader.read(4096)).decode()
    assert reply.startswith("SIP/2.0 400 ") and "Content-Length" in reply
    writer.close()
    result = await run_sipp(
        SCENARIOS / "uac_basic.xml",
        edge.tcp,
        transport="t1",
        service=DID_NATIONAL,
        keys={"caller": "2125550100"},
    )
    assert result.returncode == 0, result.explain()
    assert edge.security_types() == ["security.malformed"]


async def test_retransmitted_invite_reaches_on_call_once(make_edge) -> None:
    edge: Edge = await make_edge()
    release = asyncio.Event()

    async def slow_answer(call: InboundCall) -> None:
        call.ringing()
        await release.wait()
        call.answer(b"v=0\r\n")

    edge.behaviour = slow_answer
    raw = Udp()
    message = invite(edge.udp[1], local_port=raw.port)
    await raw.send(message, edge.udp)
    first = [await raw.recv(), await raw.recv()]
    await raw.send(message, edge.udp)  # retransmission: same branch
    again = await raw.recv()
    assert [r.split("\r\n", 1)[0] if r else None for r in first] == [
        "SIP/2.0 100 Trying",
        "SIP/2.0 180 Ringing",
    ]
    assert again is not None and again.startswith("SIP/2.0 180 Ringing")
    release.set()
    answer = await raw.recv()
    assert answer is not None and answer.startswith("SIP/2.0 200 OK")
    await raw.send(message, edge.udp)
    assert (await raw.recv() or "").startswith("SIP/2.0 200 OK")
    assert len(edge.calls) == 1
    edge.calls[0].hangup()  # pending until the ACK, which never comes; then the BYE goes out
