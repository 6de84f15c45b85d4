"""The test harness against a real peer (SIPp as UAS): if these fail, e2e results mean nothing.

Run inside a private network namespace:  scripts/in-netns .venv/bin/pytest tests/peers -q
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support.pjsua_caller import run_pjsua_call
from tests.support.rtp_probe import RtpProbe, make_sdp_offer
from tests.support.sip_uac import SipUac

pytestmark = pytest.mark.peer


def _finals(result: dict[str, Any], method: str) -> list[int]:
    return [s["status"] for s in result["statuses"] if s["method"] == method and s["status"] >= 200]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_pjsua_call_with_dtmf_hold_and_hangup(sipp_uas: Any, transport: str) -> None:
    uas = await sipp_uas("uas_answer.xml", transport=transport)
    result = await asyncio.to_thread(
        run_pjsua_call,
        f"sip:+18005550100@127.0.0.1:{uas.port}",
        [
            {"op": "wait_answer", "timeout": 5},
            {"op": "dtmf", "digits": "11", "method": "rfc2833"},
            {"op": "dtmf", "digits": "2#", "method": "sipinfo"},
            {"op": "hold"},
            {"op": "unhold"},
            {"op": "sleep", "ms": 200},
            {"op": "hangup"},
        ],
        30,
        transport=transport,
    )
    assert result["errors"] == [], result
    assert [s["state"] for s in result["states"]][-2:] == ["CONFIRMED", "DISCONNECTED"]
    assert _finals(result, "INFO") == [200, 200]
    assert _finals(result, "INVITE") == [200, 200, 200]  # call, hold, unhold
    assert result["codec"] == "PCMU"
    assert result["hangup_by"] == "local"
    assert result["steps_done"] == 7
    assert await uas.wait() == 0


async def test_pjsua_sees_remote_hangup(sipp_uas: Any) -> None:
    uas = await sipp_uas("uas_answer_then_bye.xml")
    result = await asyncio.to_thread(
        run_pjsua_call,
        f"sip:+18005550100@127.0.0.1:{uas.port}",
        [{"op": "wait_answer", "timeout": 5}, {"op": "wait_remote_hangup", "timeout": 10}],
        30,
    )
    assert result["errors"] == [], result
    assert result["hangup_by"] == "remote"
    assert await uas.wait() == 0


async def test_pjsua_reports_unanswered_call() -> None:
    # Nobody listens on this port: the caller must report a failure, not hang or claim success.
    result = await asyncio.to_thread(
        run_pjsua_call, "sip:+18005550100@127.0.0.1:9", [{"op": "wait_answer", "timeout": 3}], 20
    )
    assert result["errors"], result
    assert result["last_status"] != 200


async def test_probe_hears_its_tone_and_digits_echoed(sipp_uas: Any) -> None:
    uas = await sipp_uas("-sn uas")
    async with await SipUac.open() as uac, await RtpProbe.open() as probe:
        call = await uac.invite(f"sip:+18005550100@127.0.0.1:{uas.port}", make_sdp_offer(probe.local_port))
        assert call.status == 200
        assert call.media is not None and call.media.port == uas.media_port
        probe.use_answer(call.media)

        start = probe.now()
        await probe.send_tone(1000.0, 1.0)
        await probe.wait_for_packets(50, timeout=2)
        assert probe.dominant_tone([440.0, 1000.0, 1400.0], since=start + 0.1) == 1000.0
        stats = probe.stats(since=start)
        assert stats.lost == 0 and stats.received >= 49
        assert 18.0 < stats.mean_interval_ms < 22.0

        before = probe.now()
        await probe.send_silence(0.5)
        assert probe.dominant_tone([440.0, 1000.0, 1400.0], since=before + 0.1) is None

        await probe.send_dtmf("11")
        await asyncio.sleep(0.1)
        assert probe.received_dtmf() == "11"  # two events, not one retransmitted

        assert await call.bye() == 200
    assert await uas.wait() == 0


async def test_uac_cancel_and_info_against_sipp(sipp_uas: Any) -> None:
    uas = await sipp_uas("uas_answer.xml")
    async with await SipUac.open() as uac:
        call = await uac.invite(f"sip:+18005550100@127.0.0.1:{uas.port}", make_sdp_offer(40000))
        assert call.status == 200
        assert await call.info_dtmf("5") == 200
        assert await call.reinvite(make_sdp_offer(40000, direction="sendonly", session_version=2)) == 200
        assert await call.bye() == 200
    assert await uas.wait() == 0
