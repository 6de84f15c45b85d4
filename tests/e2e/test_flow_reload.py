"""Hot reload in the running service: a valid change serves new calls, a live call keeps its version,
an invalid change is reported and the last good version keeps serving."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

from tests.e2e.server import WIRE_FLOWS, RunningServer, start_server
from tests.support.rtp_probe import RtpProbe, make_sdp_offer
from tests.support.sip_uac import SipUac, UacCall

TONES = (600.0, 700.0, 1000.0)


def _flow(server: RunningServer, flow_id: str | None = None, path_end: str = "") -> dict[str, Any]:
    items = server.get("/api/flows")["items"]
    return next(
        i for i in items
        if (flow_id and i["flow_id"] == flow_id) or (path_end and i["path"].endswith(path_end))
    )


def _wait_flow(server: RunningServer, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _flow(server, path_end="long_prompt.yaml")
        if predicate(status):
            return status
        time.sleep(0.1)
    raise AssertionError(f"flow status never matched: {status}")


async def _call(uac: SipUac, probe: RtpProbe, port: int) -> UacCall:
    call = await uac.invite(f"sip:+18005550102@127.0.0.1:{port}", make_sdp_offer(probe.local_port))
    assert call.status == 200 and call.media is not None
    probe.use_answer(call.media)
    probe.start_audio()
    return call


async def test_hot_reload_keeps_live_calls_and_the_last_good_version(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    shutil.copytree(WIRE_FLOWS, flows)
    srv = await asyncio.to_thread(start_server, tmp_path, sip_port=5076, http_port=8096, flows_dir=flows)
    flow_file = flows / "long_prompt.yaml"
    try:
        v1 = (await asyncio.to_thread(_flow, srv, "long_prompt"))["version"]
        async with (
            await SipUac.open() as uac,
            await RtpProbe.open() as first,
            await RtpProbe.open() as second,
        ):
            call_1 = await _call(uac, first, srv.sip_port)
            await first.wait_for_tone(600.0, timeout=3, candidates=TONES)

            changed = flow_file.read_text().replace("hz: 600", "hz: 700").replace("version: 1", "version: 2")
            flow_file.write_text(changed)
            v2 = (await asyncio.to_thread(_wait_flow, srv, lambda s: s["version"] != v1))["version"]
            assert v2.startswith("2+")
            call_2 = await _call(uac, second, srv.sip_port)
            await second.wait_for_tone(700.0, timeout=3, candidates=TONES)
            await asyncio.sleep(0.6)
            window = first.now() - 0.5
            assert first.dominant_tone(TONES, since=window) == 600.0, "the live call changed flow version"
            assert second.dominant_tone(TONES, since=window) == 700.0

            good = flow_file.read_text()
            flow_file.write_text(good.replace("next: bye", "next: nowhere"))
            rejected = await asyncio.to_thread(_wait_flow, srv, lambda s: bool(s["problems"]))
            assert rejected["version"] == v2, "an invalid change must leave the last good version serving"
            assert "nowhere" in rejected["problems"][0] and "long_prompt.yaml:" in rejected["problems"][0]
            async with await RtpProbe.open() as third:
                call_3 = await _call(uac, third, srv.sip_port)
                await third.wait_for_tone(700.0, timeout=3, candidates=TONES)
                for probe in (first, second, third):
                    await probe.stop_audio()
                assert [await c.bye() for c in (call_1, call_2, call_3)] == [200, 200, 200]
        versions = {}
        for call in (call_1, call_2, call_3):
            detail = await asyncio.to_thread(srv.wait_call, sip_call_id=call.call_id)
            versions[call.call_id] = detail["flow_version"]
        assert [versions[c.call_id] for c in (call_1, call_2, call_3)] == [v1, v2, v2]
        assert any(line.get("msg") == "flow file rejected" for line in srv.log_lines())
    finally:
        code = await asyncio.to_thread(srv.stop)
    assert code == 0
