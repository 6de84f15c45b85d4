"""Callers reach agents on real softphones through the skill-based queue, end to end.

One ``helpline serve`` for the module, offering SHA-256 and MD5 digests. Callers are our RTP probe
phone (so their audio can be sent and checked); agents are pjsua2 softphones that register with the
agent listener. Each test creates its own agents through the API and logs every agent out afterwards,
so tests do not see each other's agents. More peers and promises: ``test_queue_peers.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.queue_support import (
    CALLER_TONE,
    HOLD_TONE,
    QUICK_AGENTS,
    QueueFloor,
    api_client,
    ended_call,
    events_of,
    hears,
    milestones,
    presence,
    registered,
    state_is,
    wait_agent,
)
from tests.e2e.queue_support import make_agent as _make_agent
from tests.e2e.server import RunningServer
from tests.support.rtp_probe import RtpProbe
from tests.support.sip_uac import SipUac
from tests.support.sipp import require_binary

FLOOR = QueueFloor(sip_port=5300, agent_port=5310, http_port=8130)
SUPPORT = "+18005550106"
QUEUE_CONFIG = """
[queues.support]
ring_timeout_s = 3
wrapup_s = 1
exit_key = "9"
announcements = { first_after_s = 60, every_s = 60 }
[queues.support.policy.rona.causes]
busy = { cooldown_s = 30, counts = false }

[queues.billing]
"""
_extensions = itertools.count(2001)


@pytest.fixture(scope="module")
def qserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    require_binary("espeak-ng")
    env = QUICK_AGENTS
    yield from FLOOR.serve(tmp_path_factory.mktemp("helpline-queue"), QUEUE_CONFIG, env)


@pytest.fixture
async def api(qserver: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async for client in api_client(qserver):
        yield client


async def make_agent(api: httpx.AsyncClient, **kwargs: object) -> tuple[str, str]:
    return await _make_agent(api, str(next(_extensions)), **kwargs)  # type: ignore[arg-type]


async def test_caller_talks_to_a_pjsua_agent_and_hears_its_echo(
    qserver: RunningServer, api: httpx.AsyncClient
) -> None:
    extension, password = await make_agent(api, skills={"support": 3})
    async with (
        FLOOR.on_floor(api, extension, password, echo=True) as agent,
        await SipUac.open() as uac,
        await RtpProbe.open() as probe,
    ):
        call = await FLOOR.call_in(uac, probe, SUPPORT)
        offered = await agent.wait_event(lambda e: e["event"] == "incoming", 10)
        assert offered["headers"].get("X-Helpline-Queue") == "support"
        assert offered["headers"].get("X-Helpline-Data-Account") == "A-+15551230001"  # the flow's data
        await agent.wait_event(state_is("CONFIRMED"), 10)
        # the caller's tone goes to the agent, which loops it back: both directions of the bridge
        await hears(probe, CALLER_TONE, agent)
        live = await wait_agent(api, extension, activity="connected")
        assert live["call_id"]
        assert await call.bye() == 200
        await agent.wait_event(state_is("DISCONNECTED"), 10)
        await probe.stop_audio()
    detail = await ended_call(qserver, call.call_id)
    types = [e["type"] for e in detail["events"]]
    for expected in ("queue.joined", "queue.offer", "queue.offer_result", "queue.connected", "queue.left"):
        assert expected in types, types
    (left,) = events_of(detail, "queue.left")
    assert left["data"]["reason"] == "answered"
    routing = (await api.get(f"/api/calls/{detail['id']}/routing")).json()
    assert routing["decisions"][0]["chosen"] == extension


async def test_agent_hangup_ends_the_caller_and_wrapup_follows(
    qserver: RunningServer, api: httpx.AsyncClient
) -> None:
    extension, password = await make_agent(api, skills={"support": 2})
    async with FLOOR.on_floor(api, extension, password) as agent:
        async with await SipUac.open() as uac, await RtpProbe.open() as probe:
            call = await FLOOR.call_in(uac, probe, SUPPORT)
            await agent.wait_event(state_is("CONFIRMED"), 10)
            agent.command("hangup")
            assert await call.wait_remote_bye(10), "the agent's BYE ends the caller's leg"
            await probe.stop_audio()
        await wait_agent(api, extension, activity="wrapup")
        await wait_agent(api, extension, activity="idle", timeout=5)
    detail = await ended_call(qserver, call.call_id)
    assert milestones(detail) == ["agent_done"]


async def test_rejecting_agent_goes_cold_and_the_next_agent_answers(
    qserver: RunningServer, api: httpx.AsyncClient
) -> None:
    first, first_pw = await make_agent(api, skills={"support": 5})  # best proficiency: offered first
    second, second_pw = await make_agent(api, skills={"support": 1})
    async with (
        FLOOR.pjsua(first, first_pw, incoming="reject:486") as rejecting,
        FLOOR.pjsua(second, second_pw) as answering,
    ):
        await registered(rejecting)
        await registered(answering)
        for ext in (first, second):
            await wait_agent(api, ext, reachable=True)
            await presence(api, ext)
        async with await SipUac.open() as uac, await RtpProbe.open() as probe:
            call = await FLOOR.call_in(uac, probe, SUPPORT)
            await rejecting.wait_event(lambda e: e["event"] == "incoming", 10)
            await answering.wait_event(state_is("CONFIRMED"), 10)
            cold = await wait_agent(api, first, activity="cooldown")
            assert cold["consecutive_misses"] == 0  # busy does not count towards not-ready in this config
            assert await call.bye() == 200
            await probe.stop_audio()
    # our ACK for the 486 reached the rejecting phone, so it sent its final answer only once (read
    # once the phone has stopped: pjsua buffers its log file)
    log = rejecting.log_text()
    assert re.search(r"RX \d+ bytes Request msg ACK/cseq=\d+ ", log), rejecting.log_file
    assert len(re.findall(r"TX \d+ bytes Response msg 486/INVITE", log)) == 1, rejecting.log_file
    detail = await ended_call(qserver, call.call_id)
    results = [e["data"]["outcome"] for e in events_of(detail, "queue.offer_result")]
    assert results == ["busy", "answered"]
    offers = events_of(detail, "queue.offer")
    assert offers[0]["data"]["trace"]["entry"]["age_s"] <= offers[1]["data"]["trace"]["entry"]["age_s"]
    why = (await api.get(f"/api/calls/{detail['id']}/routing", params={"agent": first})).json()
    assert "cooldown" in why["decisions"][1]["agent"]["explanation"], why


async def test_caller_hanging_up_while_the_agent_rings_stops_the_ringing(
    qserver: RunningServer, api: httpx.AsyncClient
) -> None:
    extension, password = await make_agent(api)
    async with FLOOR.on_floor(api, extension, password, incoming="ring") as agent:
        async with await SipUac.open() as uac, await RtpProbe.open() as probe:
            call = await FLOOR.call_in(uac, probe, SUPPORT)
            await agent.wait_event(lambda e: e["event"] == "incoming", 10)
            assert await call.bye() == 200
            await agent.wait_event(state_is("DISCONNECTED"), 10)
            await probe.stop_audio()
        live = await wait_agent(api, extension, activity="idle")
        assert live["consecutive_misses"] == 0
    detail = await ended_call(qserver, call.call_id)
    (left,) = events_of(detail, "queue.left")
    assert left["data"]["reason"] == "abandoned"


async def test_agent_hold_plays_hold_audio_to_the_caller(
    qserver: RunningServer, api: httpx.AsyncClient
) -> None:
    extension, password = await make_agent(api)
    async with (
        FLOOR.on_floor(api, extension, password, echo=True) as agent,
        await SipUac.open() as uac,
        await RtpProbe.open() as probe,
    ):
        call = await FLOOR.call_in(uac, probe, SUPPORT)
        await agent.wait_event(state_is("CONFIRMED"), 10)
        await hears(probe, CALLER_TONE, agent)
        agent.command("hold")
        await wait_agent(api, extension, activity="held")
        await hears(probe, HOLD_TONE, agent, timeout=6)
        agent.command("unhold")
        await wait_agent(api, extension, activity="connected")
        await hears(probe, CALLER_TONE, agent)
        assert await call.bye() == 200
        await probe.stop_audio()


async def test_queue_with_nobody_logged_in_refuses_to_join(
    qserver: RunningServer, api: httpx.AsyncClient
) -> None:
    async with await SipUac.open() as uac, await RtpProbe.open() as probe:
        # nobody is ready, but the queue has members who are logged out: join-empty refuses
        call = await FLOOR.call_in(uac, probe, SUPPORT)
        assert await call.wait_remote_bye(10)
        await probe.stop_audio()
    detail = await ended_call(qserver, call.call_id)
    assert milestones(detail) == ["queue_closed"], detail["events"]


def stop_serving(serving: Iterator[RunningServer]) -> None:
    """Run the rest of ``QueueFloor.serve``: stop the server and check its log."""
    for _ in serving:
        raise AssertionError("serve() yields once")


async def test_restart_keeps_registrations_and_presence(tmp_path: Path) -> None:
    """After a restart a registered, ready agent takes the next call without re-registering."""
    floor = QueueFloor(sip_port=5320, agent_port=5330, http_port=8131)
    env = {"HELPLINE_AGENTS__QUALIFY_INTERVAL_S": "1", "HELPLINE_AGENTS__QUALIFY_TIMEOUT_S": "0.5"}
    servers = floor.serve(tmp_path, QUEUE_CONFIG, env)
    server = next(servers)
    async with httpx.AsyncClient(base_url=server.api, timeout=5, headers=server.headers) as api:
        extension, password = await _make_agent(api, "2901", skills={"support": 1})
        async with floor.pjsua(extension, password, expires=3600) as agent:
            await registered(agent)
            await wait_agent(api, extension, reachable=True)
            await presence(api, extension, "ready")
            await asyncio.sleep(0.5)  # the presence event reaches the store (batched every 0.25 s)
            stop_serving(servers)  # SIGTERM; fails if the server logged an error
            restarted = floor.serve(tmp_path, QUEUE_CONFIG, env)
            server = next(restarted)
            registrations = len(agent.matching(lambda e: e["event"] == "reg"))
            live = await wait_agent(api, extension, reachable=True, presence="ready")
            assert live["activity"] == "idle"
            async with await SipUac.open() as uac, await RtpProbe.open() as probe:
                call = await floor.call_in(uac, probe, SUPPORT)
                await agent.wait_event(state_is("CONFIRMED"), 10)
                assert await call.bye() == 200
            assert len(agent.matching(lambda e: e["event"] == "reg")) == registrations, "no new REGISTER"
            stop_serving(restarted)


async def test_agent_phone_dying_mid_call_frees_the_caller_and_the_agent(
    qserver: RunningServer, api: httpx.AsyncClient
) -> None:
    """No BYE ever comes from a crashed phone: its silence (media timeout, 8 s here) ends the call."""
    extension, password = await make_agent(api)
    agent = FLOOR.pjsua(extension, password, echo=True)
    await agent.start()
    try:
        await registered(agent)
        await wait_agent(api, extension, reachable=True)
        await presence(api, extension)
        async with await SipUac.open() as uac, await RtpProbe.open() as probe:
            call = await FLOOR.call_in(uac, probe, SUPPORT)
            await agent.wait_event(state_is("CONFIRMED"), 10)
            await hears(probe, CALLER_TONE, agent)
            await agent.kill()
            assert await call.wait_remote_bye(15), "the caller is let go once the agent's RTP stops"
            await probe.stop_audio()
        live = await wait_agent(api, extension, reachable=False, timeout=10)
        assert live["activity"] in ("wrapup", "idle"), live  # not stuck "connected"
    finally:
        await agent.stop()
    detail = await ended_call(qserver, call.call_id)
    (lost,) = events_of(detail, "queue.agent_lost")
    assert lost["data"]["extension"] == extension
    assert milestones(detail) == ["agent_done"]


async def test_digits_cross_the_bridge_both_ways(qserver: RunningServer, api: httpx.AsyncClient) -> None:
    """The caller's RFC 4733 and SIP INFO digits reach the agent; the agent's INFO digit reaches the
    caller as RFC 4733 (an IVR behind the agent, a PIN pad...)."""
    extension, password = await make_agent(api)
    async with (
        FLOOR.on_floor(api, extension, password, echo=True) as agent,
        await SipUac.open() as uac,
        await RtpProbe.open() as probe,
    ):
        call = await FLOOR.call_in(uac, probe, SUPPORT)
        await agent.wait_event(state_is("CONFIRMED"), 10)
        await hears(probe, CALLER_TONE, agent)
        await probe.send_dtmf("5")
        await agent.wait_event(lambda e: e["event"] == "dtmf" and e["digit"] == "5", 5)
        assert await call.info_dtmf("7") == 200
        await agent.wait_event(lambda e: e["event"] == "dtmf" and e["digit"] == "7", 5)
        agent.command("dtmf_info", digits="3")
        async with asyncio.timeout(5):
            while True:  # the agent's INFO digit, re-sent to the caller as RFC 4733
                if "3" in probe.received_dtmf():
                    break
                await asyncio.sleep(0.05)
        assert await call.bye() == 200
    assert [e["digit"] for e in agent.events if e["event"] == "dtmf"] == ["5", "7"]


async def test_agent_added_with_the_cli_can_register_with_the_running_server(
    qserver: RunningServer, api: httpx.AsyncClient
) -> None:
    """The CLI writes the database from another process; the service picks the agent up by polling."""
    config = qserver.data_dir.parent / "helpline.toml"
    add = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "helpline", "agent", "add", "2950", "--config", str(config),
        "--name", "Cli Agent", "--password-stdin", "--skill", "support=2", "--queue", "support",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(add.communicate(b"cli-secret-2950\n"), 30)
    assert add.returncode == 0, output.decode()
    await wait_agent(api, "2950", presence="logged_out")  # the runtime has loaded it (5 s poll)
    async with FLOOR.on_floor(api, "2950", "cli-secret-2950", state="ready"):
        live = await wait_agent(api, "2950", reachable=True, presence="ready")
        assert live["display_name"] == "Cli Agent"
