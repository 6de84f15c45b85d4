"""The edge must receive and answer under uvloop (aiosipua's UDP protocol asserted it away)."""

from __future__ import annotations

import asyncio

import uvloop

from tests.sbc_bridge.edge_support import DID_NATIONAL, SCENARIOS, build_edge
from tests.support.sipp import SippResult, run_sipp


def test_udp_call_completes_under_uvloop() -> None:
    async def main() -> tuple[SippResult, int, bool]:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        edge = build_edge()
        await edge.bridge.start()
        try:
            result = await run_sipp(
                SCENARIOS / "uac_basic.xml", edge.udp, service=DID_NATIONAL, keys={"caller": "2125550100"}
            )
            await edge.wait_ended()
        finally:
            await edge.bridge.stop()
        return result, len(edge.calls), edge.ends[edge.calls[0].sip_call_id].by == "remote_bye"

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result, calls, remote_bye = runner.run(main())
    assert result.returncode == 0, result.explain()
    assert calls == 1 and remote_bye
