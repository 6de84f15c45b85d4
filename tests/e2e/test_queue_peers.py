"""The skill-based queue against more peers and more of its promises, end to end over the wire.

One ``helpline serve`` for the module, on its own ports (not test_queue.py's). Callers are our RTP
probe phone (it sends a tone and hears what comes back) or SIPp; agents are pjsua2 and baresip
softphones registering with the agent listener. baresip 1.0 gives up on a SHA-256 digest challenge,
so this server offers MD5 only (test_queue.py covers SHA-256 with pjsua2).

Queues here: ``support`` (exit key 9; a relaxation step after 3 s to ``spanish >= 1`` for the Spanish
flow, so agents meant to take a long-waiting support caller get Spanish 1), ``billing`` (a transfer
target) and ``announce`` (position and wait announcements 1 s after joining).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpline.queue.trace import expand_candidates
from helpline.voice.tones import dominant_tone
from tests.e2e.queue_support import (
    AGENT_TONE,
    CALLER_TONE,
    HOLD_TONE,
    TONES,
    QueueFloor,
    api_client,
    ended_call,
    events_of,
    hears,
    milestones,
    presence,
    state_is,
    wait_agent,
)
from tests.e2e.queue_support import make_agent as _make_agent
from tests.e2e.server import RunningServer
from tests.sbc_bridge.agents.baresip_agent import BaresipAgent
from tests.support.rtp_probe import RtpProbe
from tests.support.sip_uac import SipUac
from tests.support.sipp import require_binary, run_sipp

FLOOR = QueueFloor(sip_port=5400, agent_port=5410, http_port=8140)
SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
SUPPORT, SPANISH, ANNOUNCE = "+18005550106", "+18005550107", "+18005550108"
QUEUE_CONFIG = """
[security.outbound]
refer_to_numbers = true

[queues.support]
ring_timeout_s = 4
wrapup_s = 1
exit_key = "9"
announcements = { first_after_s = 120, every_s = 120 }
[queues.support.policy]
steps = [{ after_s = 3, requirements = "spanish >= 1" }]
[queues.support.policy.rona.causes]
no_answer = { cooldown_s = 30, counts = true }
busy = { cooldown_s = 30, counts = false }
rejected = { cooldown_s = 30, counts = true }
unreachable = { cooldown_s = 30, counts = true }

[queues.billing]
wrapup_s = 1

[queues.shut]
open = false

[queues.announce]
wrapup_s = 1
announcements = { first_after_s = 1, every_s = 5 }
"""
_extensions = itertools.count(3001)
QUALIFY_S = 1.0


@pytest.fixture(scope="module")
def qserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    require_binary("espeak-ng")
    require_binary("sipp")
    require_binary("baresip")
    env = {"HELPLINE_AGENTS__QUALIFY_INTERVAL_S": str(QUALIFY_S), "HELPLINE_AGENTS__QUALIFY_TIMEOUT_S": "0.5",
           "HELPLINE_AGENTS__MIN_EXPIRES": "10", "HELPLINE_AGENTS__DIGEST_ALGORITHMS": '["MD5"]'}
    yield from FLOOR.serve(tmp_path_factory.mktemp("helpline-queue-peers"), QUEUE_CONFIG, env)


@pytest.fixture
async def api(qserver: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async for client in api_client(qserver):
        yield client


async def make_agent(api: httpx.AsyncClient, **kwargs: Any) -> tuple[str, str]:
    return await _make_agent(api, str(next(_extensions)), **kwargs)


# -- helpers ---------------------------------------------------------------------------------------


async def live_call(qserver: RunningServer, call_id: str) -> dict[str, Any]:
    return await asyncio.to_thread(qserver.wait_call, sip_call_id=call_id, ended=False)


async def wait_events(
    qserver: RunningServer, call_id: str, type: str, timeout: float = 5.0
) -> list[dict[str, Any]]:
    """The data of the call's ``type`` events, once there is at least one (they are stored in batches)."""
    detail: dict[str, Any] = {}
    try:
        async with asyncio.timeout(timeout):
            while True:
                detail = await live_call(qserver, call_id)
                found = [e["data"] for e in events_of(detail, type)]
                if found:
                    return found
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"no {type} event for {call_id} in {timeout}s: {detail.get('events')}") from None


def tone_chunks(pcm: bytes, seconds: float = 0.25) -> list[float | None]:
    """The dominant candidate tone of each ``seconds`` slice of 8 kHz PCM16 (None: silence or mixed)."""
    size = int(8000 * seconds) * 2
    starts = range(0, len(pcm) - size + 1, size)
    return [dominant_tone(pcm[i:i + size], 8000, list(TONES), 0.5) for i in starts]


# -- 1. baresip ------------------------------------------------------------------------------------


async def test_baresip_agent_hears_the_caller_and_the_caller_hears_it(
    qserver: RunningServer, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Both directions of the bridge with distinct tones, and BYE from either side ends both legs."""
    extension, password = await make_agent(api, skills={"support": 2})
    async with BaresipAgent(registrar=("127.0.0.1", FLOOR.agent_port), extension=extension, password=password,
                            workdir=tmp_path, tone_hz=int(AGENT_TONE), record=True) as agent:
        await wait_agent(api, extension, reachable=True)
        await presence(api, extension)
        async with await SipUac.open() as uac, await RtpProbe.open() as probe:
            # first call: the caller hangs up
            call = await FLOOR.call_in(uac, probe, SUPPORT)
            await wait_agent(api, extension, activity="connected")
            await hears(probe, AGENT_TONE, agent.output)
            await asyncio.sleep(1.5)  # the agent records the caller's tone meanwhile
            assert probe.dominant_tone(TONES, since=probe.now() - 1.0) == AGENT_TONE
            assert await call.bye() == 200
            await agent.wait_output("session closed", 5)
            await probe.stop_audio()
            await wait_agent(api, extension, activity="idle", timeout=5)
            heard = tone_chunks(await asyncio.to_thread(agent.received_pcm))
            assert heard.count(CALLER_TONE) >= 4, f"agent heard {heard}"
            assert AGENT_TONE not in heard, f"the agent's own tone came back to it: {heard}"
            # second call: the agent hangs up
            second = await FLOOR.call_in(uac, probe, SUPPORT)
            await wait_agent(api, extension, activity="connected")
            await hears(probe, AGENT_TONE, agent.output)
            response = await agent.command("hangup")
            assert response.get("ok"), response
            assert await second.wait_remote_bye(10), "the agent's BYE ends the caller's leg"
            await probe.stop_audio()
        await wait_agent(api, extension, calls_answered=2)
    first, last = await ended_call(qserver, call.call_id), await ended_call(qserver, second.call_id)
    assert first["disposition"] == last["disposition"] == "completed"
    assert events_of(first, "call.ended")[0]["data"]["by"] == "remote_bye"
    assert milestones(last) == ["agent_done"]
    for detail in (first, last):
        assert [e["data"]["reason"] for e in events_of(detail, "queue.left")] == ["answered"]


# -- 2. SIPp caller --------------------------------------------------------------------------------


async def test_sipp_caller_reaches_a_pjsua_agent(qserver: RunningServer, api: httpx.AsyncClient) -> None:
    extension, password = await make_agent(api, skills={"support": 2})
    agent = await FLOOR.staffed_pjsua(api, extension, password)
    try:
        since = datetime.now(UTC)
        trunk = ("127.0.0.1", FLOOR.sip_port)
        result = await run_sipp(SCENARIOS / "queue_caller.xml", trunk, service=SUPPORT, local_ip="127.0.0.1",
                                timeout_s=20, wait_s=30)
        assert result.returncode == 0 and result.stat("SuccessfulCall(C)") == 1, result.explain()
        incoming = await agent.wait_event(lambda e: e["event"] == "incoming", 5)
        assert incoming["headers"].get("X-Helpline-Queue") == "support"
        await agent.wait_event(state_is("CONFIRMED"), 5)
        await agent.wait_event(state_is("DISCONNECTED"), 10)  # the caller's BYE ends the agent's leg
        await wait_agent(api, extension, calls_answered=1)
    finally:
        await agent.stop()
    calls = await asyncio.to_thread(qserver.calls, caller="+15551230002", since=since.isoformat())
    assert len(calls) == 1, calls  # the scenario's caller number is used by nobody else
    detail = await ended_call(qserver, calls[0]["sip_call_id"])
    assert detail["disposition"] == "completed"
    assert events_of(detail, "call.ended")[0]["data"]["by"] == "remote_bye"
    types = [e["type"] for e in detail["events"]]
    for expected in ("queue.joined", "queue.offer", "queue.connected", "queue.left"):
        assert expected in types, types
    assert events_of(detail, "queue.connected")[0]["data"]["extension"] == extension
    assert events_of(detail, "queue.left")[0]["data"]["reason"] == "answered"


# -- 3. a dead device ------------------------------------------------------------------------------


async def test_agent_that_stops_answering_options_is_skipped(
    qserver: RunningServer, api: httpx.AsyncClient
) -> None:
    dead_ext, dead_pw = await make_agent(api, skills={"support": 5})  # the better agent: chosen if reachable
    live_ext, live_pw = await make_agent(api, skills={"support": 1})
    dead = await FLOOR.staffed_pjsua(api, dead_ext, dead_pw)
    live = await FLOOR.staffed_pjsua(api, live_ext, live_pw)
    try:
        await dead.kill()  # no un-REGISTER: only the qualify notices
        killed_at = time.monotonic()
        view = await wait_agent(api, dead_ext, timeout=6 * QUALIFY_S + 2, reachable=False)
        assert time.monotonic() - killed_at <= 6 * QUALIFY_S + 2
        assert view["presence"] == "ready"  # still logged in: only its device is gone
        devices = view.get("devices") or []
        assert devices and not any(d["reachable"] for d in devices), view
        async with await SipUac.open() as uac, await RtpProbe.open() as probe:
            call = await FLOOR.call_in(uac, probe, SUPPORT)
            await live.wait_event(state_is("CONFIRMED"), 10)
            assert await call.bye() == 200
            await probe.stop_audio()
    finally:
        await live.stop()
        await dead.stop()
    detail = await ended_call(qserver, call.call_id)
    offers = [e["data"] for e in events_of(detail, "queue.offer")]
    assert [o["extension"] for o in offers] == [live_ext], offers
    candidates = {c["extension"]: c for c in expand_candidates(offers[0]["trace"])}
    assert not candidates[dead_ext]["eligible"]
    assert "unreachable" in candidates[dead_ext]["excluded_because"], candidates[dead_ext]
    assert [e["data"]["outcome"] for e in events_of(detail, "queue.offer_result")] == ["answered"]


# -- 4. blind transfer by REFER --------------------------------------------------------------------


async def test_agent_transfers_the_caller_to_another_queue(
    qserver: RunningServer, api: httpx.AsyncClient
) -> None:
    first_ext, first_pw = await make_agent(api, skills={"support": 2})
    billing_ext, billing_pw = await make_agent(api, queues=("billing",))
    first = await FLOOR.staffed_pjsua(api, first_ext, first_pw, echo=True)
    billing = await FLOOR.staffed_pjsua(api, billing_ext, billing_pw, echo=True)
    try:
        async with await SipUac.open() as uac, await RtpProbe.open() as probe:
            call = await FLOOR.call_in(uac, probe, SUPPORT)
            await first.wait_event(state_is("CONFIRMED"), 10)
            await hears(probe, CALLER_TONE, first.events)
            first.command("transfer", target=f"sip:queue-billing@127.0.0.1:{FLOOR.agent_port}")
            await first.wait_event(lambda e: e["event"] == "xfer_status" and e["final"], 10)
            assert first.matching(lambda e: e["event"] == "xfer_status" and e["final"])[0]["code"] == 200
            await first.wait_event(state_is("DISCONNECTED"), 10)
            await billing.wait_event(state_is("CONFIRMED"), 10)
            await asyncio.sleep(0.3)  # what the caller hears from now on comes after the billing answer
            await hears(probe, CALLER_TONE, billing.events)  # audio flows again, through the billing agent
            live = await wait_agent(api, billing_ext, activity="connected")
            assert live["call_queue"] == "billing"
            await wait_agent(api, first_ext, calls_answered=1, call_queue=None)  # its part is over
            assert await call.bye() == 200
            await billing.wait_event(state_is("DISCONNECTED"), 10)
            await probe.stop_audio()
    finally:
        await first.stop()
        await billing.stop()
    detail = await ended_call(qserver, call.call_id)
    (transfer,) = [e["data"] for e in events_of(detail, "queue.transfer")]
    assert transfer["queue"] == "billing" and transfer["extension"] == first_ext, transfer
    connected = [(e["data"]["queue"], e["data"]["extension"]) for e in events_of(detail, "queue.connected")]
    assert connected == [("support", first_ext), ("billing", billing_ext)]
    assert detail["disposition"] == "completed"
    joins = [e["data"] for e in events_of(detail, "queue.joined")]
    assert [j["queue"] for j in joins] == ["support", "billing"]
    assert joins[1]["age_s"] > 0, joins  # the caller keeps their age in the queue they are sent to


async def test_agent_transfers_the_caller_to_a_number(qserver: RunningServer, api: httpx.AsyncClient) -> None:
    extension, password = await make_agent(api, skills={"support": 2})
    agent = await FLOOR.staffed_pjsua(api, extension, password, echo=True)
    try:
        async with await SipUac.open() as uac, await RtpProbe.open() as probe:
            call = await FLOOR.call_in(uac, probe, SUPPORT, refer_status=200)
            await agent.wait_event(state_is("CONFIRMED"), 10)
            await hears(probe, CALLER_TONE, agent.events)
            agent.command("transfer", target=f"sip:+15551238888@127.0.0.1:{FLOOR.agent_port}")
            refer_to = await call.wait_refer(10)
            assert refer_to is not None and "+15551238888" in refer_to, refer_to
            assert await call.wait_remote_bye(10), "Helpline keeps no leg after the transfer"
            await probe.stop_audio()
            await agent.wait_event(lambda e: e["event"] == "xfer_status" and e["final"], 10)
            await agent.wait_event(state_is("DISCONNECTED"), 10)
        assert agent.matching(lambda e: e["event"] == "xfer_status" and e["final"])[0]["code"] == 200
    finally:
        await agent.stop()
    detail = await ended_call(qserver, call.call_id)
    assert detail["disposition"] == "transferred"
    (transfer,) = [e["data"] for e in events_of(detail, "queue.transfer")]
    assert transfer["queue"] is None and "+15551238888" in transfer["target"], transfer


async def test_failed_transfer_to_a_number_gives_the_caller_back_to_the_agent(
    qserver: RunningServer, api: httpx.AsyncClient
) -> None:
    """The far end is busy: the agent hears so (NOTIFY 486) and the two talk on, as before the REFER."""
    extension, password = await make_agent(api, skills={"support": 2})
    agent = await FLOOR.staffed_pjsua(api, extension, password, echo=True)
    try:
        async with await SipUac.open() as uac, await RtpProbe.open() as probe:
            call = await FLOOR.call_in(uac, probe, SUPPORT, refer_status=486)
            await agent.wait_event(state_is("CONFIRMED"), 10)
            await hears(probe, CALLER_TONE, agent.events)
            agent.command("transfer", target=f"sip:+15551238888@127.0.0.1:{FLOOR.agent_port}")
            assert await call.wait_refer(10) is not None
            final = await agent.wait_event(lambda e: e["event"] == "xfer_status" and e["final"], 10)
            assert final["code"] == 486, final
            await asyncio.sleep(0.5)
            await hears(probe, CALLER_TONE, agent.events)  # bridged again
            assert not agent.matching(state_is("DISCONNECTED")), agent.events
            assert await call.bye() == 200
            await agent.wait_event(state_is("DISCONNECTED"), 10)
            await probe.stop_audio()
    finally:
        await agent.stop()
    detail = await ended_call(qserver, call.call_id)
    assert detail["disposition"] == "completed"
    assert events_of(detail, "call.ended")[0]["data"]["by"] == "remote_bye"


@pytest.mark.parametrize(
    ("queue", "reason"), [("nosuch", "neither a queue nor a number"), ("shut", "closed")]
)
async def test_transfer_to_an_unknown_or_closed_queue_is_refused_and_the_call_goes_on(
    qserver: RunningServer, api: httpx.AsyncClient, queue: str, reason: str
) -> None:
    extension, password = await make_agent(api, skills={"support": 2})
    agent = await FLOOR.staffed_pjsua(api, extension, password, echo=True)
    try:
        async with await SipUac.open() as uac, await RtpProbe.open() as probe:
            call = await FLOOR.call_in(uac, probe, SUPPORT)
            await agent.wait_event(state_is("CONFIRMED"), 10)
            await hears(probe, CALLER_TONE, agent.events)
            agent.command("transfer", target=f"sip:queue-{queue}@127.0.0.1:{FLOOR.agent_port}")
            refused = await agent.wait_event(lambda e: e["event"] == "xfer_status" and e["final"], 10)
            assert refused["code"] == 403, refused
            await asyncio.sleep(0.5)
            await hears(probe, CALLER_TONE, agent.events)
            assert not agent.matching(state_is("DISCONNECTED")), agent.events
            assert not call.requests_received or all(r.method != "BYE" for r in call.requests_received)
            assert await call.bye() == 200
            await agent.wait_event(state_is("DISCONNECTED"), 10)
            await probe.stop_audio()
    finally:
        await agent.stop()
    detail = await ended_call(qserver, call.call_id)
    assert detail["disposition"] == "completed"
    (refusal,) = [e["data"] for e in events_of(detail, "queue.transfer_refused")]
    assert refusal["reason"] == reason, refusal


# -- 5. the exit key -------------------------------------------------------------------------------


async def test_exit_key_leaves_the_queue(qserver: RunningServer, api: httpx.AsyncClient) -> None:
    extension, password = await make_agent(api)
    # not ready but staffed: the caller may join the queue
    agent = await FLOOR.staffed_pjsua(api, extension, password, state="not_ready")
    try:
        async with await SipUac.open() as uac, await RtpProbe.open() as probe:
            call = await FLOOR.call_in(uac, probe, SUPPORT)
            await hears(probe, HOLD_TONE, "nobody")  # waiting: hold audio
            await probe.send_dtmf("9")
            assert await call.wait_remote_bye(10), "after leaving the queue the flow says goodbye"
            await probe.stop_audio()
        assert not agent.matching(lambda e: e["event"] == "incoming")
    finally:
        await agent.stop()
    detail = await ended_call(qserver, call.call_id)
    assert milestones(detail) == ["queue_left"]
    assert [e["data"]["reason"] for e in events_of(detail, "queue.left")] == ["left"]


# -- 6. announcements ------------------------------------------------------------------------------


def speech_since(probe: RtpProbe, since: float, window: float = 0.5) -> bool:
    """Some ``window`` of audio after ``since`` that is loud and not a tone: speech-like."""
    import audioop

    pcm = probe.pcm(since=since)
    size = int(8000 * window) * 2
    for i in range(0, len(pcm) - size + 1, size // 2):
        chunk = pcm[i:i + size]
        if audioop.rms(chunk, 2) > 300 and dominant_tone(chunk, 8000, list(TONES), 0.3) is None:
            return True
    return False


async def wait_speech(probe: RtpProbe, since: float, timeout: float) -> float:
    """Wait until speech-like audio arrives; returns when it was seen."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                if speech_since(probe, since):
                    return probe.now()
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"no speech-like audio within {timeout}s") from None


async def test_announcements_tell_position_and_do_not_delay_the_answer(
    qserver: RunningServer, api: httpx.AsyncClient
) -> None:
    extension, password = await make_agent(api, queues=("announce",))
    agent = await FLOOR.staffed_pjsua(api, extension, password, state="not_ready", echo=True)
    try:
        async with await SipUac.open() as uac, await RtpProbe.open() as first_probe, \
                await RtpProbe.open() as second_probe:
            first = await FLOOR.call_in(uac, first_probe, ANNOUNCE)
            await asyncio.sleep(0.3)
            second = await FLOOR.call_in(uac, second_probe, ANNOUNCE)
            joined = second_probe.now()
            await hears(second_probe, HOLD_TONE, "nobody")
            spoke = await wait_speech(second_probe, joined, 10)  # the first announcement, after a hold loop
            ewts = await wait_events(qserver, second.call_id, "queue.ewt")
            assert ewts[0]["position"] == 2, (ewts, spoke - joined)
            # hold tone again after the announcement: speech comes between hold tones
            await hears(second_probe, HOLD_TONE, "nobody", timeout=8)
            # the agent becomes ready while the first caller hears an announcement
            ewts = await wait_events(qserver, first.call_id, "queue.ewt")
            assert ewts[0]["position"] == 1, ewts
            await wait_speech(first_probe, first_probe.now(), 10)
            await presence(api, extension)
            await agent.wait_event(state_is("CONFIRMED"), 5)
            answered_at = first_probe.now()
            await hears(first_probe, CALLER_TONE, agent.events, timeout=1.0)  # the echo: not after the speech
            assert first_probe.now() - answered_at <= 1.0
            assert await first.bye() == 200
            assert await second.bye() == 200
            await first_probe.stop_audio()
            await second_probe.stop_audio()
    finally:
        await agent.stop()
    detail = await ended_call(qserver, first.call_id)
    assert [e["data"]["reason"] for e in events_of(detail, "queue.left")] == ["answered"]


# -- 7. relaxation ---------------------------------------------------------------------------------


async def test_relaxation_step_offers_after_its_delay(qserver: RunningServer, api: httpx.AsyncClient) -> None:
    extension, password = await make_agent(api, skills={"spanish": 2})
    agent = await FLOOR.staffed_pjsua(api, extension, password)
    try:
        async with await SipUac.open() as uac, await RtpProbe.open() as probe:
            call = await FLOOR.call_in(uac, probe, SPANISH)
            answered = time.monotonic()
            await asyncio.sleep(2.0)
            assert not agent.matching(lambda e: e["event"] == "incoming"), "offered before the step"
            await agent.wait_event(lambda e: e["event"] == "incoming", 5)
            offered_after = time.monotonic() - answered
            await agent.wait_event(state_is("CONFIRMED"), 5)
            assert await call.bye() == 200
            await probe.stop_audio()
    finally:
        await agent.stop()
    assert 2.5 <= offered_after <= 6.0, offered_after
    detail = await ended_call(qserver, call.call_id)
    steps = [e["data"] for e in events_of(detail, "queue.step")]
    assert [s["step"] for s in steps] == [0], steps
    (offer,) = [e["data"] for e in events_of(detail, "queue.offer")]
    entry = offer["trace"]["entry"]
    assert entry["step"] == 0 and entry["requirements"] == "spanish >= 1", entry
    assert entry["age_s"] >= 2.9, entry
    assert offer["trace"]["chosen"] == extension


# -- 8. live views, metrics, KPIs ------------------------------------------------------------------


async def test_live_views_metrics_and_kpis(qserver: RunningServer, api: httpx.AsyncClient) -> None:
    since = datetime.now(UTC)
    extension, password = await make_agent(api, skills={"support": 1, "spanish": 1})
    agent = await FLOOR.staffed_pjsua(api, extension, password, state="not_ready")
    try:
        async with await SipUac.open() as uac, await RtpProbe.open() as probe:
            # caller 1 waits, is seen waiting, then hangs up: abandoned
            gone = await FLOOR.call_in(uac, probe, SUPPORT)
            await asyncio.sleep(1.0)
            view = (await api.get("/api/queues/support")).json()
            (waiting,) = view["waiting"]
            assert waiting["rank"] == 1 and waiting["wait_s"] >= 0.9, waiting
            live = await live_call(qserver, gone.call_id)
            assert waiting["call_id"] == live["id"], (waiting, live["id"])
            samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                       for family in text_string_to_metric_families((await api.get("/metrics")).text)
                       for s in family.samples}
            assert samples.get(("helpline_queue_waiting", (("queue", "support"),))) == 1.0, samples
            # the module's earlier agents are logged out; this one is logged in, not ready, idle
            not_ready_idle = ("helpline_agents", (("activity", "idle"), ("presence", "not_ready")))
            assert samples.get(not_ready_idle) == 1.0, [k for k in samples if k[0] == "helpline_agents"]
            # the media clock paces the waiting caller's hold audio
            assert samples[("helpline_media_sessions_sending", ())] >= 1, samples
            assert samples[("helpline_media_frames_total", ())] > 0
            assert ("helpline_media_late_ticks_total", ()) in samples
            assert await gone.bye() == 200
            await probe.stop_audio()
        async with await SipUac.open() as uac, await RtpProbe.open() as probe:
            # caller 2 is answered once the agent is ready
            talked = await FLOOR.call_in(uac, probe, SUPPORT)
            await asyncio.sleep(0.5)
            await presence(api, extension)
            await agent.wait_event(state_is("CONFIRMED"), 10)
            assert await talked.bye() == 200
            await probe.stop_audio()
        await ended_call(qserver, gone.call_id)
        await ended_call(qserver, talked.call_id)
        await wait_agent(api, extension, activity="idle", timeout=5)
    finally:
        await agent.stop()
    view = (await api.get("/api/queues/support")).json()
    assert view["waiting"] == []
    report = (await api.get("/api/queues/support/kpis", params={"since": since.isoformat()})).json()
    kpis = report["kpis"]["queues"]["support"]
    assert (kpis["offered"], kpis["answered"], kpis["abandoned"]) == (2, 1, 1), kpis
    assert kpis["short_abandons"] == 1, kpis  # it waited about 1 s, under short_abandon_s
    assert kpis["handled"] == 1, kpis


# -- 9. a wrong password ---------------------------------------------------------------------------


async def test_wrong_password_gets_no_binding(qserver: RunningServer, api: httpx.AsyncClient) -> None:
    extension, _ = await make_agent(api)
    since = datetime.now(UTC)
    async with FLOOR.pjsua(extension, "not-the-password") as agent:
        reg = await agent.wait_event(lambda e: e["event"] == "reg", 10)
        assert reg["code"] in (401, 403) and not reg["active"], reg
        view = await wait_agent(api, extension, reachable=False)
        assert view.get("devices") == [], view
    page = (await api.get("/api/security-events", params={"type": "security.agent_auth_failed",
                                                            "since": since.isoformat()})).json()
    mine = [e for e in page["items"] if e["data"].get("extension") == extension]
    assert mine and mine[0]["data"]["reason"] == "wrong password", page
