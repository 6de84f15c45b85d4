"""Edge policy against the running service: who may call, which numbers, what bad input does."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from tests.e2e.server import RunningServer, start_server
from tests.support.rtp_probe import make_sdp_offer
from tests.support.sip_uac import SipUac
from tests.support.sipp import run_sipp


async def test_blocked_country_caller_gets_403_and_the_reason_is_stored(server: RunningServer) -> None:
    async with await SipUac.open() as uac:
        call = await uac.invite(
            f"sip:+18005550101@127.0.0.1:{server.sip_port}", make_sdp_offer(40000), caller="+74951234567"
        )
        assert call.status == 403
    detail = await asyncio.to_thread(server.wait_call, sip_call_id=call.call_id)
    assert detail["disposition"] == "refused"
    assert detail["sip_code"] == 403
    assert "+7" in (detail["end_reason"] or "")
    events = await asyncio.to_thread(server.get, "/api/security-events", type="security.blocked_country")
    assert any(e["data"].get("sip_call_id") == call.call_id for e in events["items"])


async def test_call_to_a_blocked_country_did_is_refused(server: RunningServer) -> None:
    async with await SipUac.open() as uac:
        call = await uac.invite(f"sip:+85021234567@127.0.0.1:{server.sip_port}", make_sdp_offer(40000))
        assert call.status == 403


async def test_non_trunk_source_is_dropped_silently_and_recorded(
    server: RunningServer, scenarios: Path
) -> None:
    result = await run_sipp(
        scenarios / "uac_expect_404.xml", ("127.0.0.1", server.sip_port), local_ip="127.0.0.2",
        service="+18005550101", timeout_s=4, wait_s=15,
    )
    assert result.returncode != 0, "a non-trunk source got an answer"
    assert "SIP/2.0 " not in result.messages.replace("INVITE sip:", ""), result.messages[-2000:]
    events = await asyncio.to_thread(server.get, "/api/security-events", type="security.non_trunk_source")
    assert any(e["source"].startswith("127.0.0.2:") for e in events["items"]), events


async def test_malformed_invite_does_not_disturb_a_parallel_call(
    server: RunningServer, scenarios: Path
) -> None:
    parallel = asyncio.create_task(run_sipp(
        scenarios / "uac_dtmf_rfc4733.xml", ("127.0.0.1", server.sip_port), local_ip="127.0.0.1",
        service="+18005550101", extra=["-set", "digit", "1"], timeout_s=30, wait_s=45,
    ))
    await asyncio.sleep(0.5)
    garbage = [
        b"INVITE sip:+18005550101@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKbad1\r\n"
        b"From: <sip:+15551230001@127.0.0.1>;tag=1\r\nTo: <sip:+18005550101@127.0.0.1>\r\n"
        b"Call-ID: malformed-1\r\nCSeq: banana INVITE\r\nContent-Length: 0\r\n\r\n",
        b"\x00\xff\xfe garbage that is no SIP at all\r\n\r\n",
        b"INVITE sip:x SIP/2.0\r\nContent-Length: -5\r\n\r\n",
    ]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 5999))
        sock.settimeout(2)
        for datagram in garbage:
            sock.sendto(datagram, ("127.0.0.1", server.sip_port))
        reply = sock.recv(4096)
    assert reply.startswith(b"SIP/2.0 400"), reply
    assert b"CSeq" in reply, "the 400 names the bad header"
    # over TCP: a 400 naming the header, then the server still takes calls on the same port
    reader, writer = await asyncio.open_connection("127.0.0.1", server.sip_port)
    writer.write(garbage[0].replace(b"SIP/2.0/UDP 127.0.0.1:5999", b"SIP/2.0/TCP 127.0.0.1:5999"))
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert line.startswith(b"SIP/2.0 400"), line
    result = await parallel
    assert result.returncode == 0, result.explain()
    health = await asyncio.to_thread(server.get, "/healthz")
    assert health["status"] == "ok"
    events = await asyncio.to_thread(server.get, "/api/security-events", type="security.malformed")
    assert any(e["data"].get("header", "").lower() == "cseq" for e in events["items"]), events


async def test_cancel_before_answer(tmp_path: Path, scenarios: Path) -> None:
    """A trunk call that rings before answering: CANCEL gets 200 and the INVITE 487; stored as cancelled."""
    srv = await asyncio.to_thread(
        start_server, tmp_path, sip_port=5072, http_port=8092,
        env={"HELPLINE_CALLS__RING_BEFORE_ANSWER_MS": "3000"},
    )
    try:
        result = await run_sipp(
            scenarios / "uac_cancel.xml", ("127.0.0.1", 5072), local_ip="127.0.0.1",
            service="+18005550101", timeout_s=15, wait_s=25,
        )
        assert result.returncode == 0, result.explain()
        calls = await asyncio.to_thread(srv.wait_call, disposition="cancelled")
        assert calls["answered_at"] is None
        assert [e["type"] for e in calls["events"]] == ["call.offered", "call.ended"]
    finally:
        code = await asyncio.to_thread(srv.stop)
    assert code == 0


async def test_sigterm_ends_live_calls_with_bye(tmp_path: Path) -> None:
    srv = await asyncio.to_thread(start_server, tmp_path, sip_port=5074, http_port=8094)
    async with await SipUac.open() as uac:
        call = await uac.invite("sip:+18005550102@127.0.0.1:5074", make_sdp_offer(40002))
        assert call.status == 200
        await asyncio.sleep(0.5)
        stopping = asyncio.create_task(asyncio.to_thread(srv.stop))
        assert await call.wait_remote_bye(10), "live call not ended with BYE on shutdown"
        assert await stopping == 0
    import sqlite3

    db = sqlite3.connect(srv.data_dir / "helpline.sqlite3")
    try:
        row = db.execute("select disposition, end_reason, ended_at from calls where sip_call_id = ?",
                         (call.call_id,)).fetchone()
    finally:
        db.close()
    assert row[0] == "completed" and row[1] == "shutdown" and row[2] is not None


async def test_exhausted_rtp_ports_refuse_with_503_and_free_up_again(tmp_path: Path) -> None:
    """Two RTP ports: a third concurrent call gets 503 with a stored reason; after hang-up calls work."""
    srv = await asyncio.to_thread(
        start_server, tmp_path, sip_port=5078, http_port=8098,
        env={"HELPLINE_MEDIA__RTP_PORT_MIN": "31000", "HELPLINE_MEDIA__RTP_PORT_MAX": "31002"},
    )
    try:
        async with await SipUac.open() as uac:
            target = "sip:+18005550102@127.0.0.1:5078"
            first = await uac.invite(target, make_sdp_offer(40010))
            second = await uac.invite(target, make_sdp_offer(40012))
            third = await uac.invite(target, make_sdp_offer(40014))
            assert (first.status, second.status, third.status) == (200, 200, 503)
            assert await first.bye() == 200 and await second.bye() == 200
            await asyncio.sleep(0.2)
            fourth = await uac.invite(target, make_sdp_offer(40016))
            assert fourth.status == 200, "RTP ports were not released after the calls ended"
            assert await fourth.bye() == 200
        refused = await asyncio.to_thread(srv.wait_call, sip_call_id=third.call_id)
        assert refused["disposition"] == "refused" and refused["sip_code"] == 503
        assert refused["end_reason"] == "media ports exhausted"
    finally:
        code = await asyncio.to_thread(srv.stop)
    assert code == 0
