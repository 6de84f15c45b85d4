"""The dialer's INVITE client transaction against a hand-written agent that records what it gets.

These assert what reached the agent's socket: the ACK for a 486 (RFC 3261 §17.1.1.3), INVITE
retransmissions before any answer (Timer A), the CANCEL, and the ACK+BYE when a 200 crosses it.
"""

from __future__ import annotations

import asyncio

from tests.sbc_bridge.agents.agent_support import PASSWORDS, SDP_OFFER
from tests.sbc_bridge.agents.raw_agent import RawAgent, digest_answer
from tests.support.sip_uac import build_message


async def _registered(h, extension: str = "1001") -> tuple[RawAgent, object]:
    agent = await RawAgent.open(h.udp)
    agent.answer_options = True
    ok = await agent.register(extension, PASSWORDS[extension], expires=300)
    assert ok.status == 200, ok.start_line
    (binding,) = await h.wait_bindings(extension, lambda b: len(b) == 1, 3)
    return agent, binding


def _dial(h, binding, *, ring_timeout: float = 5.0):
    return h.edge.dial(
        binding,
        caller="+15551230001",
        caller_name='Jane "JJ" Doe',
        sdp_offer=SDP_OFFER,
        headers={"X-Helpline-Queue": "sales", "X-Helpline-Call": "abc123"},
        ring_timeout=ring_timeout,
    )


async def test_busy_is_acked_on_the_invite_branch(make_agent_edge) -> None:
    h = await make_agent_edge()
    agent, binding = await _registered(h)
    try:
        agent.on_invite = "busy"
        leg = _dial(h, binding)
        async with asyncio.timeout(5):
            outcome = await leg.outcome()
        assert (outcome.kind, outcome.sip_code) == ("busy", 486)
        invite = await agent.wait_for(lambda m: m.method == "INVITE" and not m.is_response, 2)
        ack = await agent.wait_for(lambda m: m.method == "ACK" and not m.is_response, 3)
        assert ack.branch == invite.branch
        assert ack.header("cseq") == f"{invite.cseq[0]} ACK"
        assert ack.to_tag == agent.to_tags[invite.call_id]
        assert ack.start_line.split()[1] == invite.start_line.split()[1]
        # a retransmitted 486 (as if our ACK were lost) is ACKed again
        mark = len(agent.messages)
        agent.send(agent.response_to(invite, 486, "Busy Here"), h.udp)
        again = await agent.wait_for(lambda m: m.method == "ACK", 3, since=mark)
        assert again.branch == invite.branch
        assert len(agent.received(lambda m: m.method == "INVITE")) == 1  # no INVITE retransmission
        assert h.edge.live_dialogs() == set()
    finally:
        agent.close()


async def test_invite_headers_reach_the_agent(make_agent_edge) -> None:
    h = await make_agent_edge()
    agent, binding = await _registered(h)
    try:
        agent.on_invite = "answer"
        leg = _dial(h, binding)
        async with asyncio.timeout(5):
            outcome = await leg.outcome()
        assert (
            outcome.kind == "answered" and outcome.sip_code == 200 and b"m=audio 42000" in outcome.sdp_answer
        )
        invite = agent.received(lambda m: m.method == "INVITE" and not m.is_response)[0]
        assert invite.start_line == f"INVITE {binding.contact} SIP/2.0"
        assert invite.header("from").startswith('"Jane \\"JJ\\" Doe" <sip:+15551230001@127.0.0.1:')
        assert invite.header("p-asserted-identity").startswith('"Jane \\"JJ\\" Doe" <sip:+15551230001@')
        assert invite.header("x-helpline-queue") == "sales" and invite.header("x-helpline-call") == "abc123"
        assert invite.header("to").startswith("<sip:1001@127.0.0.1:")
        assert invite.body == SDP_OFFER
        ack = await agent.wait_for(lambda m: m.method == "ACK", 3)
        assert ack.branch != invite.branch and ack.to_tag == agent.to_tags[invite.call_id]
        assert ack.start_line == f"ACK sip:agent@127.0.0.1:{agent.port} SIP/2.0"  # the 200's Contact
        assert h.edge.live_dialogs() == {leg.sip_call_id}
        leg.hangup()
        bye = await agent.wait_for(lambda m: m.method == "BYE", 3)
        assert bye.start_line == f"BYE sip:agent@127.0.0.1:{agent.port} SIP/2.0"
        assert leg.ended is not None and leg.ended.by == "local"
        assert h.edge.live_dialogs() == set()
    finally:
        agent.close()


async def test_invite_is_retransmitted_until_a_response_then_unreachable(make_agent_edge) -> None:
    h = await make_agent_edge(timer_t1=0.05)  # Timer B = 3.2 s
    agent, binding = await _registered(h)
    try:
        agent.on_invite = "silent"
        leg = _dial(h, binding, ring_timeout=30)
        async with asyncio.timeout(6):
            outcome = await leg.outcome()
        assert outcome.kind == "unreachable" and outcome.sip_code is None
        invites = agent.received(lambda m: m.method == "INVITE" and not m.is_response)
        assert len(invites) >= 5 and len({m.branch for m in invites}) == 1
    finally:
        agent.close()


async def test_ring_timeout_cancels_and_a_crossing_200_is_acked_and_byed(make_agent_edge) -> None:
    h = await make_agent_edge()
    agent, binding = await _registered(h)
    try:
        agent.on_invite = "ring"
        agent.cross_cancel = True
        leg = _dial(h, binding, ring_timeout=0.5)
        async with asyncio.timeout(5):
            outcome = await leg.outcome()
        assert outcome.kind == "no_answer"
        invite = agent.received(lambda m: m.method == "INVITE" and not m.is_response)[0]
        cancel = await agent.wait_for(lambda m: m.method == "CANCEL", 3)
        assert cancel.branch == invite.branch and cancel.header("cseq") == f"{invite.cseq[0]} CANCEL"
        ack = await agent.wait_for(lambda m: m.method == "ACK", 3)
        assert ack.to_tag == agent.to_tags[invite.call_id]
        await agent.wait_for(lambda m: m.method == "BYE", 3)
        assert h.edge.live_dialogs() == set()
    finally:
        agent.close()


async def test_cancel_gets_487_acked(make_agent_edge) -> None:
    h = await make_agent_edge()
    agent, binding = await _registered(h)
    try:
        agent.on_invite = "ring"
        leg = _dial(h, binding, ring_timeout=30)
        await agent.wait_for(lambda m: m.method == "INVITE", 3)
        await asyncio.sleep(0.2)
        leg.cancel()
        leg.cancel()  # idempotent
        async with asyncio.timeout(3):
            assert (await leg.outcome()).kind == "cancelled"
        await agent.wait_for(lambda m: m.method == "CANCEL", 3)
        ack = await agent.wait_for(lambda m: m.method == "ACK", 3)
        invite = agent.received(lambda m: m.method == "INVITE")[0]
        assert ack.branch == invite.branch
        assert len(agent.received(lambda m: m.method == "CANCEL")) == 1
    finally:
        agent.close()


async def test_agent_invite_needs_auth_then_is_forbidden_and_strays_get_481(make_agent_edge) -> None:
    h = await make_agent_edge()
    agent = await RawAgent.open(h.udp)
    try:

        def invite(branch: str, auth: str | None = None) -> bytes:
            headers = [
                ("Via", f"SIP/2.0/UDP 127.0.0.1:{agent.port};branch={branch};rport"),
                ("Max-Forwards", "70"),
                ("From", f"<sip:1001@127.0.0.1>;tag={agent.from_tag}"),
                ("To", "<sip:+15550001111@127.0.0.1>"),
                ("Call-ID", "out-1@raw"),
                ("CSeq", "1 INVITE"),
                ("Contact", f"<sip:1001@127.0.0.1:{agent.port}>"),
            ]
            if auth:
                headers.append(("Authorization", auth))
            return build_message("INVITE sip:+15550001111@127.0.0.1 SIP/2.0", headers)

        first = await agent.request(invite("z9hG4bKout1"), "z9hG4bKout1")
        assert first.status == 401
        auth = digest_answer(
            agent.challenge(first, "MD5"),
            method="INVITE",
            uri="sip:+15550001111@127.0.0.1",
            username="1001",
            password=PASSWORDS["1001"],
        )
        second = await agent.request(invite("z9hG4bKout2", auth), "z9hG4bKout2")
        assert (second.status, second.reason) == (403, "Outbound calls not enabled")
        bye = build_message(
            "BYE sip:x@127.0.0.1 SIP/2.0",
            [
                ("Via", f"SIP/2.0/UDP 127.0.0.1:{agent.port};branch=z9hG4bKbye1;rport"),
                ("From", "<sip:1001@127.0.0.1>;tag=a"),
                ("To", "<sip:x@127.0.0.1>;tag=b"),
                ("Call-ID", "nothing@raw"),
                ("CSeq", "2 BYE"),
            ],
        )
        assert (await agent.request(bye, "z9hG4bKbye1")).status == 481
        options = build_message(
            "OPTIONS sip:127.0.0.1 SIP/2.0",
            [
                ("Via", f"SIP/2.0/UDP 127.0.0.1:{agent.port};branch=z9hG4bKopt1;rport"),
                ("From", "<sip:1001@127.0.0.1>;tag=a"),
                ("To", "<sip:127.0.0.1>"),
                ("Call-ID", "opt@raw"),
                ("CSeq", "1 OPTIONS"),
                # what a phone's keepalive carries; a bare probe smaller than our answer gets none (A1)
                ("Max-Forwards", "70"),
                ("Contact", f"<sip:1001@127.0.0.1:{agent.port}>"),
                ("Accept", "application/sdp"),
                ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, NOTIFY"),
                ("User-Agent", "raw-agent/1.0 (a test phone)"),
            ],
        )
        assert (await agent.request(options, "z9hG4bKopt1")).status == 200
    finally:
        agent.close()


async def test_qualify_marks_reachable_then_unreachable(make_agent_edge) -> None:
    h = await make_agent_edge(qualify_interval_s=0.3, qualify_timeout_s=0.3, qualify_failures=2)
    agent, binding = await _registered(h)
    try:
        (answered,) = await h.wait_bindings("1001", lambda b: len(b) == 1 and b[0].rtt_ms is not None, 3)
        assert answered.reachable and answered.rtt_ms >= 0
        options = agent.received(lambda m: m.method == "OPTIONS")
        assert options and options[0].start_line.startswith(f"OPTIONS {binding.contact} ")
        agent.answer_options = False
        (lost,) = await h.wait_bindings("1001", lambda b: len(b) == 1 and not b[0].reachable, 5)
        assert lost.contact == binding.contact
        agent.answer_options = True
        await h.wait_bindings("1001", lambda b: len(b) == 1 and b[0].reachable, 5)
    finally:
        agent.close()


async def test_refer_from_the_agent_and_transfer_notifies(make_agent_edge) -> None:
    h = await make_agent_edge()
    agent, binding = await _registered(h)
    stranger = await RawAgent.open(h.udp)
    try:
        agent.on_invite = "answer"
        leg = _dial(h, binding)
        async with asyncio.timeout(5):
            assert (await leg.outcome()).kind == "answered"
        invite = agent.received(lambda m: m.method == "INVITE" and not m.is_response)[0]
        refers: list[str] = []
        leg.on_refer = lambda uri: refers.append(uri) is None and uri.startswith("sip:+1555999")
        data, branch = agent.in_dialog_bytes(
            invite, "REFER", 1, [("Refer-To", "<sip:+15559998888@127.0.0.1>")]
        )
        mark = len(agent.messages)
        assert (await agent.request(data, branch)).status == 202
        trying = await agent.wait_for(lambda m: m.method == "NOTIFY" and not m.is_response, 3, since=mark)
        assert trying.header("event") == "refer" and trying.header("subscription-state").startswith("active")
        assert trying.body == b"SIP/2.0 100 Trying\r\n" and trying.header("content-type").startswith(
            "message/sipfrag"
        )
        assert refers == ["sip:+15559998888@127.0.0.1"]
        mark = len(agent.messages)
        leg.notify_transfer(200)
        final = await agent.wait_for(lambda m: m.method == "NOTIFY" and not m.is_response, 3, since=mark)
        assert final.header("subscription-state").startswith("terminated")
        assert final.body == b"SIP/2.0 200 OK\r\n" and final.cseq[0] > trying.cseq[0]
        # a transfer the upper layer refuses
        data, branch = agent.in_dialog_bytes(
            invite, "REFER", 2, [("Refer-To", "<sip:+4420000000@127.0.0.1>")]
        )
        assert (await agent.request(data, branch)).status == 403
        # the same dialog's BYE from another address is no dialog of ours
        stranger.to_tags[invite.call_id] = agent.to_tags[invite.call_id]
        data, branch = stranger.in_dialog_bytes(invite, "BYE", 3)
        assert (await stranger.request(data, branch)).status == 481
        event = await h.wait_security("security.agent_foreign_in_dialog", 2)
        assert event["source"] == f"127.0.0.1:{stranger.port}"
        assert h.edge.live_dialogs() == {leg.sip_call_id}
        # the agent's own BYE ends it
        ended = []
        leg.on_ended = ended.append
        data, branch = agent.in_dialog_bytes(invite, "BYE", 4)
        assert (await agent.request(data, branch)).status == 200
        assert [e.by for e in ended] == ["remote_bye"] and h.edge.live_dialogs() == set()
    finally:
        agent.close()
        stranger.close()


async def test_restored_binding_is_qualified_before_it_takes_calls(make_agent_edge) -> None:
    """After a restart the saved binding comes back unreachable, and the phone's OPTIONS answer
    makes it reachable; one that expired meanwhile is not restored."""
    from dataclasses import replace

    first = await make_agent_edge()
    agent, binding = await _registered(first)
    try:
        async with asyncio.timeout(5):  # stops at once even while the first qualify is in flight
            await first.edge.stop()
        second = await make_agent_edge()
        expired = replace(binding, contact="sip:1001@127.0.0.1:9", expires_at=binding.registered_at - 1)
        assert second.edge.restore([binding, expired]) == 1
        (restored,) = second.edge.bindings("1001")
        assert restored.contact == binding.contact and not restored.reachable
        mark = len(agent.messages)
        await agent.wait_for(lambda m: m.method == "OPTIONS" and not m.is_response, 3, since=mark)
        (alive,) = await second.wait_bindings("1001", lambda b: len(b) == 1 and b[0].reachable, 3)
        assert alive.source == binding.source and alive.expires_at == binding.expires_at
        assert second.edge.restore([binding]) == 0  # known already: not restored twice
    finally:
        agent.close()
