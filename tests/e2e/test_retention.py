"""What a running Helpline keeps once its calls are over: no call objects, no RTP ports, no edge state.

The server runs in this process so its parts can be looked at. The cyclic collector is off while the
calls run: an object still counted at the end was kept alive (a table never pruned) or could only be
freed by a full cyclic GC pass, which under load comes rarely enough for ended calls to pile up
(bench/leak_check.py measured ~7 KiB per call that way).
"""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from pathlib import Path

import pytest

from helpline.calls.live_channel import LiveChannel
from helpline.calls.manager import ActiveCall
from helpline.config import HttpSection, MediaSection, ServerSection, Settings
from helpline.sbc_bridge import InboundCall, SipSettings, TrunkConfig
from helpline.sbc_bridge.leg import EdgeCall, SipLeg
from helpline.server import start
from helpline.voice import RtpSession
from tests.support.sipp import run_sipp

T1 = 0.05
CALLS = 10
SHORT_DID, LONG_DID = "+18005550111", "+18005550112"
TESTS = Path(__file__).resolve().parents[1]
PER_CALL_TYPES = (ActiveCall, LiveChannel, InboundCall, SipLeg, EdgeCall, RtpSession)

FLOW = """flow:
  id: {id}
  version: 1
  entry: tone
nodes:
  - id: tone
    type: play
    prompt: {{tone: {{hz: 440, ms: {ms}}}}}
    barge_in: false
    next: bye
  - id: bye
    type: hangup
"""


def _per_call_objects() -> Counter[str]:
    return Counter(type(o).__name__ for o in gc.get_objects() if isinstance(o, PER_CALL_TYPES))


def _settings(tmp_path: Path) -> Settings:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "short.yaml").write_text(FLOW.format(id="short", ms=100))
    (flows / "long.yaml").write_text(FLOW.format(id="long", ms=20000))
    return Settings(
        server=ServerSection(data_dir=tmp_path / "data", flows_dir=flows, log_level="warning"),
        http=HttpSection(host="127.0.0.1", port=0),
        media=MediaSection(host="127.0.0.1", rtp_port_min=36000, rtp_port_max=36999),
        sip=SipSettings(host="127.0.0.1", port=0, timer_t1=T1),
        trunks=[
            TrunkConfig(
                name="carrier", sources=("127.0.0.1/32",), country_code="1", national_prefix="1",
                international_prefix="011", dids={SHORT_DID: "short", LONG_DID: "long"},
            )
        ],
    )


@pytest.mark.usefixtures("no_cyclic_gc")
async def test_ended_calls_leave_nothing_behind(tmp_path: Path) -> None:
    before = _per_call_objects()
    service = await start(_settings(tmp_path))
    try:
        target = service.bridge.local_addresses["udp"]
        runs = [  # the flow hangs up; the caller hangs up mid-prompt; refused after the port was taken
            (TESTS / "sbc_bridge" / "scenarios" / "uac_server_bye.xml", SHORT_DID),
            (TESTS / "scenarios" / "uac_bye_mid_prompt.xml", LONG_DID),
            (TESTS / "scenarios" / "uac_expect_488_no_sdp.xml", SHORT_DID),
        ]
        for scenario, did in runs:
            result = await run_sipp(
                scenario, target, local_ip="127.0.0.1", service=did, calls=CALLS,
                keys={"caller": "2125550100"}, extra=["-r", "20", "-l", str(CALLS)], wait_s=60,
            )
            assert result.returncode == 0, f"{scenario.name}: {result.explain()}"
            assert result.stat("SuccessfulCall(C)") == CALLS
        async with asyncio.timeout(10):
            while service.calls.active_count:  # noqa: ASYNC110 - a count, no event to wait on
                await asyncio.sleep(0.05)
        await asyncio.sleep(64 * T1 + 0.5)  # every linger window of the edge is over

        assert service.engine.sessions == []  # the refused calls' ports too
        for uas in service.bridge._uas.values():
            assert uas._calls == {}
            assert uas.transactions.server_transactions == {}
            assert uas.requests._pending == {}
        left = _per_call_objects() - before
        assert not left, f"kept alive after the calls ended: {dict(left)}"
    finally:
        await service.stop()
