"""Callers reach agents on real softphones through the skill-based queue, end to end.

One ``helpline serve`` for the module. Callers are our RTP probe phone (so their audio can be sent and
checked) or SIPp; agents are pjsua2 and baresip softphones that register with the agent listener. Each
test creates its own agents through the API and logs every agent out afterwards, so tests do not see
each other's agents.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.server import RunningServer, start_server
from tests.sbc_bridge.agents.pjsua_agent import PjsuaAgent
from tests.support.rtp_probe import RtpProbe, make_sdp_offer, sine_pcm16
from tests.support.sip_uac import SipUac, UacCall
from tests.support.sipp import require_binary

SIP_PORT, AGENT_PORT, HTTP_PORT = 5300, 5310, 8130
QUEUE_CONFIG = """
[queues.support]
ring_timeout_s = 3
wrapup_s = 1
exit_key = "9"
announcements = { first_after_s = 60, every_s = 60 }
[queues.support.policy.rona.causes]
no_answer = { cooldown_s = 30, counts = true }
busy = { cooldown_s = 30, counts = false }
rejected = { cooldown_s = 30, counts = true }
unreachable = { cooldown_s = 30, counts = true }

[queues.billing]
"""
CALLER_TONE, AGENT_TONE, HOLD_TONE = 697.0, 1209.0, 440.0
TONES = (CALLER_TONE, AGENT_TONE, HOLD_TONE, 1000.0)
CALLER_PCM = sine_pcm16([CALLER_TONE], 1.0)  # a whole number of cycles: loops without a click
_extensions = itertools.count(2001)


@pytest.fixture(scope="module")
def qserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    require_binary("espeak-ng")
    srv = start_server(
        tmp_path_factory.mktemp("helpline-queue"),
        sip_port=SIP_PORT,
        http_port=HTTP_PORT,
        extra=QUEUE_CONFIG,
        agent_port=AGENT_PORT,
        env={
            "HELPLINE_AGENTS__QUALIFY_INTERVAL_S": "1",
            "HELPLINE_AGENTS__QUALIFY_TIMEOUT_S": "0.5",
            "HELPLINE_AGENTS__MIN_EXPIRES": "10",
        },
    )
    yield srv
    code = srv.stop()
    problems = [
        line
        for line in srv.log_lines()
        if line.get("level") in ("error", "critical") or "Traceback" in str(line.get("raw", ""))
    ]
    assert code == 0, f"helpline serve exited {code}"
    assert not problems, f"server logged errors: {problems[:5]}"


@pytest.fixture
async def api(qserver: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=qserver.api, timeout=5) as client:
        yield client
        # every agent a test made goes home, so the next test starts with an empty floor
        for agent in (await client.get("/api/agents")).json()["items"]:
            await client.put(f"/api/agents/{agent['extension']}/presence", json={"presence": "logged_out"})


async def make_agent(
    api: httpx.AsyncClient, *, skills: dict[str, int] | None = None, queues: tuple[str, ...] = ("support",)
) -> tuple[str, str]:
    extension = str(next(_extensions))
    password = f"pw-{extension}-secret"
    body = {
        "extension": extension,
        "display_name": f"Agent {extension}",
        "password": password,
        "skills": skills or {},
        "queues": [{"queue": q} for q in queues],
    }
    response = await api.post("/api/agents", json=body)
    assert response.status_code == 201, response.text
    return extension, password


async def ready(api: httpx.AsyncClient, extension: str) -> None:
    response = await api.put(f"/api/agents/{extension}/presence", json={"presence": "ready"})
    assert response.status_code == 200, response.text


async def wait_agent(
    api: httpx.AsyncClient, extension: str, timeout: float = 10.0, **expected: Any
) -> dict[str, Any]:
    """Poll the live agent view until every expected field has its value."""
    last: dict[str, Any] = {}
    async with asyncio.timeout(timeout):
        while True:
            last = (await api.get(f"/api/agents/{extension}")).json()
            live = last.get("live") or last
            if all(live.get(k) == v for k, v in expected.items()):
                return live
            await asyncio.sleep(0.1)
    raise AssertionError(f"agent {extension} never reached {expected}: {last}")


def pjsua(extension: str, password: str, **kwargs: Any) -> PjsuaAgent:
    return PjsuaAgent(registrar=("127.0.0.1", AGENT_PORT), extension=extension, password=password, **kwargs)


async def registered(agent: PjsuaAgent) -> None:
    await agent.wait_event(lambda e: e["event"] == "reg" and e.get("code") == 200 and e.get("active"), 10)


async def hears(probe: RtpProbe, tone: float, agent: PjsuaAgent, timeout: float = 5.0) -> None:
    try:
        await probe.wait_for_tone(tone, timeout=timeout, candidates=TONES)
    except TimeoutError:
        heard = probe.dominant_tone(TONES, since=probe.now() - 1.0)
        raise AssertionError(
            f"caller never heard {tone} Hz (last second: {heard}); agent: {agent.events}"
        ) from None


async def call_in(uac: SipUac, probe: RtpProbe, did: str) -> UacCall:
    call = await uac.invite(f"sip:{did}@127.0.0.1:{SIP_PORT}", make_sdp_offer(probe.local_port))
    assert call.status == 200, call.responses
    assert call.media is not None
    probe.use_answer(call.media)
    return call


async def test_caller_talks_to_a_pjsua_agent_and_hears_its_echo(
    qserver: RunningServer, api: httpx.AsyncClient
) -> None:
    extension, password = await make_agent(api, skills={"support": 3})
    async with pjsua(extension, password, echo=True) as agent:
        await registered(agent)
        await wait_agent(api, extension, reachable=True)
        await ready(api, extension)
        async with await SipUac.open() as uac, await RtpProbe.open() as probe:
            call = await call_in(uac, probe, "+18005550106")
            probe.start_audio(CALLER_PCM)
            offered = await agent.wait_event(lambda e: e["event"] == "incoming", 10)
            assert offered["headers"].get("X-Helpline-Queue") == "support"
            assert offered["headers"].get("X-Helpline-Data-Account") == "A-+15551230001" or offered[
                "headers"
            ].get("X-Helpline-Data-Account", "").startswith("A-")
            await agent.wait_event(lambda e: e["event"] == "call_state" and e["state"] == "CONFIRMED", 10)
            # the caller's tone goes to the agent, which loops it back: both directions of the bridge
            await hears(probe, CALLER_TONE, agent)
            live = await wait_agent(api, extension, activity="connected")
            assert live["call_id"]
            assert await call.bye() == 200
            await agent.wait_event(lambda e: e["event"] == "call_state" and e["state"] == "DISCONNECTED", 10)
            await probe.stop_audio()
    detail = await asyncio.to_thread(qserver.wait_call, sip_call_id=call.call_id)
    types = [e["type"] for e in detail["events"]]
    for expected in ("queue.joined", "queue.offer", "queue.offer_result", "queue.connected", "queue.left"):
        assert expected in types, types
    left = next(e for e in detail["events"] if e["type"] == "queue.left")
    assert left["data"]["reason"] == "answered"
    routing = (await api.get(f"/api/calls/{detail['id']}/routing")).json()
    assert routing["decisions"][0]["chosen"] == extension


async def test_agent_hangup_ends_the_caller_and_wrapup_follows(
    qserver: RunningServer, api: httpx.AsyncClient
) -> None:
    extension, password = await make_agent(api, skills={"support": 2})
    async with pjsua(extension, password) as agent:
        await registered(agent)
        await wait_agent(api, extension, reachable=True)
        await ready(api, extension)
        async with await SipUac.open() as uac, await RtpProbe.open() as probe:
            call = await call_in(uac, probe, "+18005550106")
            probe.start_audio(CALLER_PCM)
            await agent.wait_event(lambda e: e["event"] == "call_state" and e["state"] == "CONFIRMED", 10)
            agent.command("hangup")
            assert await call.wait_remote_bye(10), "the agent's BYE ends the caller's leg"
            await probe.stop_audio()
        await wait_agent(api, extension, activity="wrapup")
        await wait_agent(api, extension, activity="idle", timeout=5)
    detail = await asyncio.to_thread(qserver.wait_call, sip_call_id=call.call_id)
    milestones = [e["data"]["name"] for e in detail["events"] if e["type"] == "ivr.milestone"]
    assert milestones == ["agent_done"]


async def test_rejecting_agent_goes_cold_and_the_next_agent_answers(
    qserver: RunningServer, api: httpx.AsyncClient
) -> None:
    first, first_pw = await make_agent(api, skills={"support": 5})  # best proficiency: offered first
    second, second_pw = await make_agent(api, skills={"support": 1})
    async with (
        pjsua(first, first_pw, incoming="reject:486") as rejecting,
        pjsua(second, second_pw) as answering,
    ):
        await registered(rejecting)
        await registered(answering)
        for ext in (first, second):
            await wait_agent(api, ext, reachable=True)
            await ready(api, ext)
        async with await SipUac.open() as uac, await RtpProbe.open() as probe:
            call = await call_in(uac, probe, "+18005550106")
            probe.start_audio(CALLER_PCM)
            await rejecting.wait_event(lambda e: e["event"] == "incoming", 10)
            await answering.wait_event(lambda e: e["event"] == "call_state" and e["state"] == "CONFIRMED", 10)
            cold = await wait_agent(api, first, activity="cooldown")
            assert cold["consecutive_misses"] == 0  # busy does not count towards not-ready in this config
            assert await call.bye() == 200
            await probe.stop_audio()
        # our ACK for the 486 reached the rejecting phone, so it sent its final answer only once
        log = rejecting.log_text()
        assert re.search(r"RX \d+ bytes Request msg ACK/cseq=\d+ ", log), rejecting.log_file
        assert len(re.findall(r"TX \d+ bytes Response msg 486/INVITE", log)) == 1, rejecting.log_file
    detail = await asyncio.to_thread(qserver.wait_call, sip_call_id=call.call_id)
    results = [e["data"]["outcome"] for e in detail["events"] if e["type"] == "queue.offer_result"]
    assert results == ["busy", "answered"]
    offers = [e for e in detail["events"] if e["type"] == "queue.offer"]
    assert offers[0]["data"]["trace"]["entry"]["age_s"] <= offers[1]["data"]["trace"]["entry"]["age_s"]
    why = (await api.get(f"/api/calls/{detail['id']}/routing", params={"agent": first})).json()
    assert "cooldown" in why["decisions"][1]["agent"]["explanation"], why


async def test_caller_hanging_up_while_the_agent_rings_stops_the_ringing(
    qserver: RunningServer, api: httpx.AsyncClient
) -> None:
    extension, password = await make_agent(api)
    async with pjsua(extension, password, incoming="ring") as agent:
        await registered(agent)
        await wait_agent(api, extension, reachable=True)
        await ready(api, extension)
        async with await SipUac.open() as uac, await RtpProbe.open() as probe:
            call = await call_in(uac, probe, "+18005550106")
            probe.start_audio(CALLER_PCM)
            await agent.wait_event(lambda e: e["event"] == "incoming", 10)
            assert await call.bye() == 200
            await agent.wait_event(lambda e: e["event"] == "call_state" and e["state"] == "DISCONNECTED", 10)
            await probe.stop_audio()
        live = await wait_agent(api, extension, activity="idle")
        assert live["consecutive_misses"] == 0
    detail = await asyncio.to_thread(qserver.wait_call, sip_call_id=call.call_id)
    left = next(e for e in detail["events"] if e["type"] == "queue.left")
    assert left["data"]["reason"] == "abandoned"


async def test_agent_hold_plays_hold_audio_to_the_caller(
    qserver: RunningServer, api: httpx.AsyncClient
) -> None:
    extension, password = await make_agent(api)
    async with pjsua(extension, password, echo=True) as agent:
        await registered(agent)
        await wait_agent(api, extension, reachable=True)
        await ready(api, extension)
        async with await SipUac.open() as uac, await RtpProbe.open() as probe:
            call = await call_in(uac, probe, "+18005550106")
            probe.start_audio(CALLER_PCM)
            await agent.wait_event(lambda e: e["event"] == "call_state" and e["state"] == "CONFIRMED", 10)
            await probe.wait_for_tone(CALLER_TONE, timeout=5, candidates=TONES)
            agent.command("hold")
            await wait_agent(api, extension, activity="held")
            await probe.wait_for_tone(HOLD_TONE, timeout=6, candidates=TONES)
            agent.command("unhold")
            await wait_agent(api, extension, activity="connected")
            await probe.wait_for_tone(CALLER_TONE, timeout=5, candidates=TONES)
            assert await call.bye() == 200
            await probe.stop_audio()


async def test_queue_with_nobody_logged_in_refuses_to_join(
    qserver: RunningServer, api: httpx.AsyncClient
) -> None:
    async with await SipUac.open() as uac, await RtpProbe.open() as probe:
        # nobody is ready, but the queue has members who are logged out: join-empty refuses
        call = await call_in(uac, probe, "+18005550106")
        probe.start_audio(CALLER_PCM)
        assert await call.wait_remote_bye(10)
        await probe.stop_audio()
    detail = await asyncio.to_thread(qserver.wait_call, sip_call_id=call.call_id)
    milestones = [e["data"]["name"] for e in detail["events"] if e["type"] == "ivr.milestone"]
    assert milestones == ["queue_closed"], detail["events"]
