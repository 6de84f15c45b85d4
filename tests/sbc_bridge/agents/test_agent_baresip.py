"""A second softphone (baresip, libre's SIP stack) against the agent listener.

baresip 1.0 (libre 1.x) gives up on a 401 that carries any challenge whose algorithm it lacks
("Register: Function not implemented" with SHA-256 offered, first or second), so these run with
``digest_algorithms=("MD5",)``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.sbc_bridge.agents.agent_support import PASSWORDS, SDP_OFFER
from tests.sbc_bridge.agents.baresip_agent import BaresipAgent

pytestmark = pytest.mark.peer


async def test_baresip_registers_and_auto_answers(make_agent_edge, tmp_path: Path) -> None:
    h = await make_agent_edge(digest_algorithms=("MD5",))
    async with BaresipAgent(
        registrar=h.udp, extension="1002", password=PASSWORDS["1002"], workdir=tmp_path
    ) as agent:
        (binding,) = await h.wait_bindings("1002", lambda b: len(b) == 1, 10)
        assert binding.source == ("127.0.0.1", agent.port) and binding.transport == "udp"
        leg = h.edge.dial(
            binding,
            caller="+15551230001",
            caller_name="Jane Doe",
            sdp_offer=SDP_OFFER,
            headers={"X-Helpline-Queue": "sales"},
            ring_timeout=10,
        )
        async with asyncio.timeout(10):
            outcome = await leg.outcome()
        assert outcome.kind == "answered" and outcome.sdp_answer is not None
        assert b"PCMU" in outcome.sdp_answer or b"RTP/AVP 0" in outcome.sdp_answer
        ended = []
        leg.on_ended = ended.append
        leg.hangup()
        await agent.wait_output("session closed", 5)  # how baresip 1.0 reports a BYE it got
        assert h.edge.live_dialogs() == set()


async def test_baresip_with_a_wrong_password_gets_no_binding(make_agent_edge, tmp_path: Path) -> None:
    h = await make_agent_edge(digest_algorithms=("MD5",))
    async with BaresipAgent(registrar=h.udp, extension="1002", password="wrong", workdir=tmp_path):
        event = await h.wait_security("security.agent_auth_failed", 10)
        assert event["extension"] == "1002" and event["reason"] == "wrong password"
        await asyncio.sleep(0.5)
        assert h.edge.bindings("1002") == ()
