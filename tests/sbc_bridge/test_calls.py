"""Calls through the trunk edge driven by real SIPp: answer, hang-ups, CANCEL, re-INVITE, INFO, timers."""

from __future__ import annotations

import asyncio

from helpline.sbc_bridge import InboundCall, SipSettings
from tests.sbc_bridge.edge_support import DID, DID_NATIONAL, PCMU_ANSWER, SCENARIOS, Edge
from tests.support.sipp import run_sipp


async def test_basic_udp_call_is_answered_and_remote_bye_ends_it(make_edge) -> None:
    edge: Edge = await make_edge()
    result = await run_sipp(
        SCENARIOS / "uac_basic.xml", edge.udp, service=DID_NATIONAL, keys={"caller": "2125550100"}
    )
    assert result.returncode == 0, result.explain()
    assert result.stat("SuccessfulCall(C)") == 1
    await edge.wait_ended()
    (call,) = edge.calls
    assert (call.trunk, call.caller, call.did, call.flow_id) == ("carrier", "+12125550100", DID, "main-flow")
    assert call.caller_name == "Jane Caller"
    assert call.transport == "udp" and call.source[0] == "127.0.0.1"
    assert call.sdp_offer is not None and b"m=audio" in call.sdp_offer
    assert edge.ends[call.sip_call_id].by == "remote_bye"
    assert edge.security == [] and edge.refused == []


async def test_tcp_call_answers_on_the_same_connection(make_edge) -> None:
    edge: Edge = await make_edge()
    result = await run_sipp(
        SCENARIOS / "uac_basic.xml",
        edge.tcp,
        transport="t1",
        service=DID_NATIONAL,
        keys={"caller": "2125550100"},
    )
    assert result.returncode == 0, result.explain()
    await edge.wait_ended()
    (call,) = edge.calls
    assert call.transport == "tcp"
    assert "transport=tcp" in result.messages  # our Contact keeps the dialog on TCP
    assert edge.ends[call.sip_call_id].by == "remote_bye"


async def test_cancel_before_answer_gives_487_and_ends_with_cancel(make_edge) -> None:
    edge: Edge = await make_edge()

    async def ring_forever(call: InboundCall) -> None:
        call.ringing()

    edge.behaviour = ring_forever
    result = await run_sipp(
        SCENARIOS / "uac_cancel.xml", edge.udp, service=DID_NATIONAL, keys={"caller": "2125550100"}
    )
    assert result.returncode == 0, result.explain()
    await edge.wait_ended()
    (call,) = edge.calls
    end = edge.ends[call.sip_call_id]
    assert (end.by, end.sip_code) == ("cancel", 487)


async def test_server_hangup_sends_bye_to_the_contact(make_edge) -> None:
    edge: Edge = await make_edge()

    async def hang_up_after_a_second(call: InboundCall) -> None:
        call.answer(PCMU_ANSWER)
        await asyncio.sleep(1.0)
        call.hangup()

    edge.behaviour = hang_up_after_a_second
    for transport, target in (("u1", edge.udp), ("t1", edge.tcp)):
        result = await run_sipp(
            SCENARIOS / "uac_server_bye.xml",
            target,
            transport=transport,
            service=DID_NATIONAL,
            keys={"caller": "2125550100"},
        )
        assert result.returncode == 0, result.explain()
    await edge.wait_ended(2)
    assert [e.by for e in edge.ends.values()] == ["local", "local"]


async def test_reinvite_hold_and_unhold_go_through_on_reoffer(make_edge) -> None:
    edge: Edge = await make_edge()
    result = await run_sipp(
        SCENARIOS / "uac_reinvite.xml", edge.udp, service=DID_NATIONAL, keys={"caller": "2125550100"}
    )
    assert result.returncode == 0, result.explain()
    await edge.wait_ended()
    assert len(edge.calls) == 1
    assert [b"a=sendonly" in o for o in edge.reoffers] == [True, False]


async def test_reinvite_without_on_reoffer_gets_488_and_the_call_survives(make_edge) -> None:
    edge: Edge = await make_edge()

    async def no_reoffer(call: InboundCall) -> None:
        call.answer(PCMU_ANSWER)
        call.on_reoffer = None

    edge.behaviour = no_reoffer
    result = await run_sipp(
        SCENARIOS / "uac_reinvite_488.xml", edge.udp, service=DID_NATIONAL, keys={"caller": "2125550100"}
    )
    assert result.returncode == 0, result.explain()
    await edge.wait_ended()
    assert edge.ends[edge.calls[0].sip_call_id].by == "remote_bye"


async def test_info_dtmf_reaches_on_dtmf(make_edge) -> None:
    edge: Edge = await make_edge()
    result = await run_sipp(
        SCENARIOS / "uac_info.xml", edge.udp, service=DID_NATIONAL, keys={"caller": "2125550100"}
    )
    assert result.returncode == 0, result.explain()
    await edge.wait_ended()
    assert edge.dtmf == [("5", 160), ("#", 100)]


async def test_session_timer_ends_a_call_whose_peer_never_refreshes(make_edge) -> None:
    settings = SipSettings(
        host="127.0.0.1", port=0, min_se=2, session_expires=2, allow_short_session_timers=True
    )
    edge: Edge = await make_edge(settings=settings)
    result = await run_sipp(
        SCENARIOS / "uac_session_timer.xml", edge.udp, service=DID_NATIONAL, keys={"caller": "2125550100"}
    )
    assert result.returncode == 0, result.explain()
    await edge.wait_ended()
    assert edge.ends[edge.calls[0].sip_call_id].by == "session_expired"


async def test_missing_ack_releases_the_call_with_bye(make_edge) -> None:
    edge: Edge = await make_edge(settings=SipSettings(host="127.0.0.1", port=0, timer_t1=0.1))
    result = await run_sipp(
        SCENARIOS / "uac_no_ack.xml", edge.udp, service=DID_NATIONAL, keys={"caller": "2125550100"}
    )
    assert result.returncode == 0, result.explain()
    await edge.wait_ended()
    assert edge.ends[edge.calls[0].sip_call_id].by == "ack_timeout"


async def test_options_keepalive_is_answered_with_allow(make_edge) -> None:
    edge: Edge = await make_edge()
    for transport, target in (("u1", edge.udp), ("t1", edge.tcp)):
        result = await run_sipp(SCENARIOS / "uac_options.xml", target, transport=transport)
        assert result.returncode == 0, result.explain()
    assert "User-Agent" not in result.messages and "Server:" not in result.messages
    assert edge.calls == [] and edge.security == []
