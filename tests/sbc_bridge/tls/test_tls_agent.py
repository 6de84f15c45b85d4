"""An agent's softphone over TLS (A14): baresip registers to the agent edge and takes a call.

pjsua2-pybind11 is built without TLS and SIPp without OpenSSL here; baresip (libre with OpenSSL) is
the real TLS softphone available. It trusts the edge's generated certificate through ``sip_cafile``.
baresip 1.0 offers MD5 digest only (see test_agent_baresip.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from helpline.sbc_bridge import SipSettings
from helpline.sbc_bridge.agents.settings import AgentEdgeSettings
from helpline.sbc_bridge.transport_tls import EdgeTlsTransport
from tests.sbc_bridge.agents.agent_support import PASSWORDS, SDP_OFFER, AgentHarness, build_harness
from tests.sbc_bridge.agents.baresip_agent import BaresipAgent

pytestmark = pytest.mark.peer


class TlsBaresipAgent(BaresipAgent):
    """baresip whose account registers over TLS, trusting ``cafile`` for the edge's certificate."""

    def __init__(self, *, cafile: Path, **kwargs: object) -> None:
        super().__init__(transport="tls", **kwargs)  # type: ignore[arg-type]
        self.cafile = cafile

    def write_config(self) -> None:
        super().write_config()
        config = self.config_dir / "config"
        config.write_text(config.read_text() + f"sip_cafile\t{self.cafile}\n")


@pytest.fixture
async def harness(tls_settings: tuple[SipSettings, AgentEdgeSettings]) -> AsyncIterator[AgentHarness]:
    agents = tls_settings[1]
    h = build_harness(
        digest_algorithms=("MD5",),
        tls_port=0,
        tls_certificate=agents.tls_certificate,
        tls_key=agents.tls_key,
    )
    await h.edge.start()
    yield h
    await h.edge.stop()


async def test_agent_registers_and_takes_a_call_over_tls(
    harness: AgentHarness, tls_settings: tuple[SipSettings, AgentEdgeSettings], tmp_path: Path
) -> None:
    h, agents = harness, tls_settings[1]
    assert agents.tls_certificate is not None
    registrar = h.edge.local_addresses["tls"]
    async with TlsBaresipAgent(
        registrar=registrar,
        extension="1002",
        password=PASSWORDS["1002"],
        workdir=tmp_path,
        cafile=agents.tls_certificate,
    ) as agent:
        (binding,) = await h.wait_bindings("1002", lambda b: len(b) == 1, 15)
        assert binding.transport == "tls"
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
        # the INVITE went down the agent's own registration connection: no second connection exists
        transport = h.edge._wires["tls"].transport
        assert isinstance(transport, EdgeTlsTransport)
        assert list(transport._connections) == [binding.source]
        leg.hangup()
        await agent.wait_output("session closed", 5)
        assert h.edge.live_dialogs() == set()
