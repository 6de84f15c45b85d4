"""The agent listener against a real softphone (pjsua2): register, qualify, calls both ways of ending."""

from __future__ import annotations

import asyncio
import re

import pytest

from helpline.sbc_bridge import CallEnd
from tests.sbc_bridge.agents.agent_support import PASSWORDS, SDP_OFFER, answer_for
from tests.sbc_bridge.agents.pjsua_agent import PjsuaAgent

pytestmark = pytest.mark.peer


async def test_pjsua_registers_with_the_right_password(make_agent_edge) -> None:
    h = await make_agent_edge()
    async with PjsuaAgent(registrar=h.udp, extension="1001", password=PASSWORDS["1001"]) as agent:
        reg = await agent.wait_event(lambda e: e["event"] == "reg", 10)
        assert reg["code"] == 200 and reg["active"], reg
        bindings = await h.wait_bindings("1001", lambda b: len(b) == 1, 5)
        binding = bindings[0]
        assert binding.source == ("127.0.0.1", agent.local_port)
        assert binding.transport == "udp"
        assert f":{agent.local_port}" in binding.contact
        assert h.binding_events and h.binding_events[0][0] == "1001"


async def test_pjsua_with_a_wrong_password_is_refused(make_agent_edge) -> None:
    h = await make_agent_edge()
    async with PjsuaAgent(registrar=h.udp, extension="1001", password="wrong") as agent:
        reg = await agent.wait_event(lambda e: e["event"] == "reg", 10)
        assert reg["code"] == 401 and not reg["active"], reg
        assert h.edge.bindings("1001") == ()
        events = h.security_of("security.agent_auth_failed")
        assert events and events[0]["extension"] == "1001" and events[0]["reason"] == "wrong password"


async def test_qualify_sees_pjsua_answer_then_vanish(make_agent_edge) -> None:
    h = await make_agent_edge(qualify_interval_s=0.5, qualify_timeout_s=0.5, qualify_failures=2)
    agent = PjsuaAgent(registrar=h.udp, extension="1001", password=PASSWORDS["1001"])
    await agent.start()
    try:
        await agent.wait_event(lambda e: e["event"] == "reg" and e["code"] == 200, 10)
        (binding,) = await h.wait_bindings("1001", lambda b: len(b) == 1 and b[0].rtt_ms is not None, 5)
        assert binding.reachable
        assert agent.proc is not None
        agent.proc.kill()
        await agent.proc.wait()
        (lost,) = await h.wait_bindings("1001", lambda b: len(b) == 1 and not b[0].reachable, 6)
        assert lost.contact == binding.contact
    finally:
        await agent.stop()


async def _registered_pjsua(h, **kwargs) -> tuple[PjsuaAgent, object]:
    transport = kwargs.get("transport", "udp")
    registrar = h.tcp if transport == "tcp" else h.udp
    agent = PjsuaAgent(registrar=registrar, extension="1001", password=PASSWORDS["1001"], **kwargs)
    await agent.start()
    await agent.wait_event(lambda e: e["event"] == "reg" and e["code"] == 200, 10)
    (binding,) = await h.wait_bindings("1001", lambda b: len(b) == 1, 5)
    return agent, binding


def _dial(h, binding, ring_timeout: float = 10.0):
    return h.edge.dial(
        binding,
        caller="+15551230001",
        caller_name="Jane Doe",
        sdp_offer=SDP_OFFER,
        headers={"X-Helpline-Queue": "sales", "X-Helpline-Call": "c0ffee"},
        ring_timeout=ring_timeout,
    )


def _state(name: str, code: int | None = None):
    return lambda e: e["event"] == "call_state" and e["state"] == name and (code is None or e["code"] == code)


async def test_dial_answered_then_our_hangup(make_agent_edge) -> None:
    h = await make_agent_edge()
    agent, binding = await _registered_pjsua(h, incoming="answer", answer_delay_ms=300)
    try:
        leg = _dial(h, binding)
        ended: list[CallEnd] = []
        leg.on_ended = ended.append
        async with asyncio.timeout(10):
            outcome = await leg.outcome()
        assert outcome.kind == "answered" and outcome.sip_code == 200
        assert outcome.sdp_answer is not None and b"m=audio" in outcome.sdp_answer
        incoming = await agent.wait_event(lambda e: e["event"] == "incoming", 2)
        assert incoming["call_id"] == leg.sip_call_id
        assert incoming["headers"] == {"X-Helpline-Queue": "sales", "X-Helpline-Call": "c0ffee"}
        assert incoming["pai"].startswith('"Jane Doe" <sip:+15551230001@')
        assert incoming["remote"].startswith('"Jane Doe" <sip:+15551230001@')
        await agent.wait_event(_state("CONFIRMED"), 5)  # pjsua got our ACK
        assert h.edge.live_dialogs() == {leg.sip_call_id}
        leg.hangup()
        await agent.wait_event(_state("DISCONNECTED"), 5)
        assert [e.by for e in ended] == ["local"]
        assert h.edge.live_dialogs() == set()
    finally:
        await agent.stop()


async def test_dial_rejected_busy_and_the_agent_gets_the_ack(make_agent_edge) -> None:
    h = await make_agent_edge()
    agent, binding = await _registered_pjsua(h, incoming="reject:486")
    try:
        leg = _dial(h, binding)
        async with asyncio.timeout(10):
            outcome = await leg.outcome()
        assert (outcome.kind, outcome.sip_code) == ("busy", 486)
        await agent.wait_event(_state("DISCONNECTED", 486), 5)
        await asyncio.sleep(1.5)  # pjsua's Timer G would have resent the 486 by now without an ACK
    finally:
        await agent.stop()
    log = agent.log_text()  # read once the phone stopped: pjsua buffers its log file
    assert re.search(r"RX \d+ bytes Request msg ACK/cseq=1 ", log), agent.log_file
    assert len(re.findall(r"TX \d+ bytes Response msg 486/INVITE", log)) == 1, agent.log_file


async def test_dial_declined_is_rejected_with_its_code(make_agent_edge) -> None:
    h = await make_agent_edge()
    agent, binding = await _registered_pjsua(h, incoming="reject:603")
    try:
        leg = _dial(h, binding)
        async with asyncio.timeout(10):
            outcome = await leg.outcome()
        assert (outcome.kind, outcome.sip_code) == ("rejected", 603)
    finally:
        await agent.stop()


async def test_ring_timeout_cancels_and_the_agent_stops_ringing(make_agent_edge) -> None:
    h = await make_agent_edge()
    agent, binding = await _registered_pjsua(h, incoming="ring")
    try:
        leg = _dial(h, binding, ring_timeout=1.5)
        await agent.wait_event(_state("EARLY"), 5)
        async with asyncio.timeout(10):
            outcome = await leg.outcome()
        assert outcome.kind == "no_answer" and outcome.sip_code is None
        await agent.wait_event(_state("DISCONNECTED", 487), 5)
        assert h.edge.live_dialogs() == set()
    finally:
        await agent.stop()


async def test_cancel_while_ringing(make_agent_edge) -> None:
    h = await make_agent_edge()
    agent, binding = await _registered_pjsua(h, incoming="ring")
    try:
        leg = _dial(h, binding, ring_timeout=30)
        await agent.wait_event(_state("EARLY"), 5)
        leg.cancel()
        async with asyncio.timeout(3):
            assert (await leg.outcome()).kind == "cancelled"
        await agent.wait_event(_state("DISCONNECTED", 487), 5)
    finally:
        await agent.stop()


async def test_agent_hold_dtmf_and_bye(make_agent_edge) -> None:
    h = await make_agent_edge()
    agent, binding = await _registered_pjsua(h, incoming="answer")
    try:
        leg = _dial(h, binding)
        offers: list[bytes] = []
        digits: list[tuple[str, int]] = []
        ended: list[CallEnd] = []
        got_digit, got_end = asyncio.Event(), asyncio.Event()

        def reoffer(offer: bytes) -> bytes:
            offers.append(offer)
            return answer_for(offer, "recvonly" if b"a=sendonly" in offer else "sendrecv")

        leg.on_reoffer = reoffer
        leg.on_dtmf = lambda digit, ms: (digits.append((digit, ms)), got_digit.set())
        leg.on_ended = lambda end: (ended.append(end), got_end.set())
        async with asyncio.timeout(10):
            assert (await leg.outcome()).kind == "answered"
        await agent.wait_event(_state("CONFIRMED"), 5)
        agent.command("hold")
        await agent.wait_event(
            lambda e: (
                e["event"] == "tsx" and e["method"] == "INVITE" and e["role"] == "UAC" and e["status"] == 200
            ),
            5,
        )
        assert len(offers) == 1 and b"a=sendonly" in offers[0]
        agent.command("dtmf_info", digits="5")
        async with asyncio.timeout(5):
            await got_digit.wait()
        assert digits == [("5", 160)]
        agent.command("hangup")
        async with asyncio.timeout(5):
            await got_end.wait()
        assert ended[0].by == "remote_bye"
        assert h.edge.live_dialogs() == set()
    finally:
        await agent.stop()


async def test_tcp_agent_registers_and_takes_a_call_on_its_connection(make_agent_edge) -> None:
    h = await make_agent_edge()
    agent, binding = await _registered_pjsua(h, incoming="answer", transport="tcp")
    try:
        assert binding.transport == "tcp" and binding.source[0] == "127.0.0.1"
        leg = _dial(h, binding)
        async with asyncio.timeout(10):
            assert (await leg.outcome()).kind == "answered"
        await agent.wait_event(_state("CONFIRMED"), 5)
        leg.hangup()
        await agent.wait_event(_state("DISCONNECTED"), 5)
    finally:
        await agent.stop()
    log = agent.log_text()  # read once the phone stopped: pjsua buffers its log file
    assert "Request msg INVITE" in log and "from TCP 127.0.0.1:" in log


async def test_our_reinvite_and_stop_with_a_live_call(make_agent_edge) -> None:
    h = await make_agent_edge()
    agent, binding = await _registered_pjsua(h, incoming="answer")
    try:
        leg = _dial(h, binding)
        ended: list[CallEnd] = []
        leg.on_ended = ended.append
        async with asyncio.timeout(10):
            assert (await leg.outcome()).kind == "answered"
        await agent.wait_event(_state("CONFIRMED"), 5)
        async with asyncio.timeout(10):
            answer = await leg.reinvite(SDP_OFFER.replace(b"a=sendrecv", b"a=sendonly"))
        assert answer is not None and b"a=recvonly" in answer
        await h.edge.stop()
        await agent.wait_event(_state("DISCONNECTED"), 5)
        assert [e.by for e in ended] == ["local"]
    finally:
        await agent.stop()
