"""Real attackers against a live ``helpline serve``: sipvicious scans and cracks, SIPp floods.

One server for the module with the default ``[security]`` policy. Its trunk accepts 127.0.0.1 only
(tests/e2e/server.py), so every attacker binds its own address in 127.0.0.0/8 (Linux routes the whole
block to ``lo``): each attack comes from a fresh source, so one attack's ban never explains another's
result. A legitimate pjsua2 agent registers from 127.0.0.2 (not a trunk source: not exempt from bans)
and takes a SIPp call from the trunk while the attacks run; the call must connect every time.

The agent listener offers MD5 only here: svcrack 0.3.3 computes MD5 digests only, and when SHA-256 is
offered first it dies on "Unknown algorithm" instead of trying a password. A control run proves that
svcrack does crack this server when the password comes before the ban threshold, so "cracked
nothing" is the ban's doing, not the tool's.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.attack_support import (
    SCENARIOS,
    active_bans,
    answers_at_all,
    banned_event,
    event_time,
    run_sipvicious,
    security_events,
    start_flood,
    wait_banned,
)
from tests.e2e.queue_support import QueueFloor, api_client, presence, registered, state_is, wait_agent
from tests.e2e.server import RunningServer
from tests.sbc_bridge.agents.pjsua_agent import PjsuaAgent
from tests.support.sipp import run_sipp

FLOOR = QueueFloor(sip_port=5900, agent_port=5910, http_port=8190)
TRUNK = ("127.0.0.1", FLOOR.sip_port)
AGENTS = ("127.0.0.1", FLOOR.agent_port)
SUPPORT = "+18005550106"  # queue_support flow -> queue "support"
LONG_PROMPT = "+18005550102"  # a flow that just plays: trunk load with no agent involved
WITNESS_IP = "127.0.0.2"
WITNESS = ("2001", "pw-2001-witness")
CRACKED = ("2002", "pw-2002-crackme")
CONTROL = ("2003", "pw-2003-control")
OTHERS = ("2004", "2005")
SCAN_RANGE = "1995-2010"  # holds all five real extensions
DISGUISE = "Zoiper rv2.10.20.1"  # a softphone's User-Agent: gets past the scanner list
QUEUE_CONFIG = """
[queues.support]
ring_timeout_s = 5
wrapup_s = 0
"""
_attackers = (f"127.0.0.{n}" for n in itertools.count(66))


def attacker() -> str:
    """A source address no earlier attack used."""
    return next(_attackers)


@pytest.fixture(scope="module")
def aserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    env = {
        "HELPLINE_AGENTS__DIGEST_ALGORITHMS": '["MD5"]',
        "HELPLINE_AGENTS__QUALIFY_INTERVAL_S": "2",
        "HELPLINE_AGENTS__QUALIFY_TIMEOUT_S": "1",
    }
    serving = FLOOR.serve(tmp_path_factory.mktemp("helpline-attacks"), QUEUE_CONFIG, env)
    server = next(serving)
    with httpx.Client(base_url=server.api, headers=server.headers, timeout=5) as api:
        for extension, password in (WITNESS, CRACKED, CONTROL, *((e, f"pw-{e}-other") for e in OTHERS)):
            body = {"extension": extension, "display_name": f"Agent {extension}", "password": password,
                    "skills": {"support": 1}, "queues": [{"queue": "support"}]}
            response = api.post("/api/agents", json=body)
            assert response.status_code == 201, response.text
    yield server
    for _ in serving:  # stops the server; fails on any error it logged
        pass


@pytest.fixture
async def api(aserver: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async for client in api_client(aserver):
        yield client


@pytest.fixture
async def witness(api: httpx.AsyncClient) -> AsyncIterator[PjsuaAgent]:
    """The legitimate agent: registered from 127.0.0.2, ready for the support queue."""
    extension, password = WITNESS
    agent = PjsuaAgent(bind=WITNESS_IP, registrar=AGENTS, extension=extension, password=password)
    await agent.start()
    try:
        await registered(agent)
        live = await wait_agent(api, extension, reachable=True)
        assert any(d["source"].startswith(f"{WITNESS_IP}:") for d in live["devices"]), live["devices"]
        await presence(api, extension, "ready")
        yield agent
        bans = [b for b in await active_bans(api) if b.get("key") in (WITNESS_IP, extension)]
        assert not bans, f"the legitimate agent was banned or locked: {bans}"
    finally:
        await agent.stop()


async def witness_takes_a_call(api: httpx.AsyncClient, agent: PjsuaAgent) -> None:
    """A SIPp caller from the trunk reaches the witness through the queue; the call connects."""
    confirmed = len(agent.matching(state_is("CONFIRMED")))
    await wait_agent(api, WITNESS[0], activity="idle", presence="ready", reachable=True)
    result = await run_sipp(SCENARIOS / "queue_caller.xml", TRUNK, service=SUPPORT, local_ip="127.0.0.1",
                            timeout_s=25, wait_s=35)
    assert result.returncode == 0 and result.stat("SuccessfulCall(C)") == 1, result.explain()
    assert len(agent.matching(state_is("CONFIRMED"))) > confirmed, "the witness never answered"


async def during_the_call(api: httpx.AsyncClient, agent: PjsuaAgent, attack: Awaitable[None]) -> None:
    """Run ``attack`` while the witness takes a call, then have it take another one."""
    await asyncio.gather(attack, witness_takes_a_call(api, agent))
    await witness_takes_a_call(api, agent)


def sv_target(port: int) -> list[str]:
    return ["127.0.0.1", "-p", str(port)]


# -- A1: discovery --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["OPTIONS", "INVITE", "REGISTER"])
async def test_svmap_finds_nothing_on_the_trunk_port_from_a_stranger(
    api: httpx.AsyncClient, witness: PjsuaAgent, method: str
) -> None:
    runs = []

    async def attack() -> None:
        for user_agent in (None, DISGUISE):
            runs.append(await run_sipvicious(
                "svmap", attacker(), ["-m", method, "--debug", *sv_target(TRUNK[1])],
                user_agent=user_agent, timeout=30,
            ))

    await during_the_call(api, witness, attack())
    for run in runs:
        assert run.found_nothing, run.explain()
        assert "SIP/2.0" not in run.stdout, run.explain()  # --debug prints every datagram it got


async def test_svmap_fingerprints_no_product_on_the_agent_port(
    api: httpx.AsyncClient, witness: PjsuaAgent
) -> None:
    scanner, disguised = attacker(), attacker()
    runs = {}

    async def attack() -> None:
        runs["plain"] = await run_sipvicious("svmap", scanner, ["--debug", *sv_target(AGENTS[1])],
                                             timeout=30)
        runs["masked"] = await run_sipvicious("svmap", disguised, ["--debug", *sv_target(AGENTS[1])],
                                              user_agent=DISGUISE, timeout=30)

    await during_the_call(api, witness, attack())
    plain, masked = runs["plain"], runs["masked"]
    # svmap's own User-Agent (friendly-scanner) is on the drop list: no answer at all
    assert plain.found_nothing and "SIP/2.0" not in plain.stdout, plain.explain()
    scans = await security_events(api, "security.scanner")
    assert any(e["source"].startswith(f"{scanner}:") for e in scans), scans[-5:]
    # disguised, it gets the OPTIONS answer, and the answer names no product or version
    assert "SIP/2.0 200" in masked.stdout, masked.explain()
    table = [line for line in masked.stdout.splitlines() if line.startswith("| 127.0.0.1")]
    assert table == [f"| 127.0.0.1:{AGENTS[1]} | unknown    |"], masked.explain()
    reply = masked.stdout.split("SIP/2.0 200", 1)[1].lower()
    assert "\\r\\nserver:" not in reply and "\\r\\nuser-agent:" not in reply, masked.explain()


# -- A2/A3: extension enumeration -------------------------------------------------------------------


@pytest.mark.parametrize("method", ["REGISTER", "INVITE", "OPTIONS"])
async def test_svwar_finds_no_extension(
    api: httpx.AsyncClient, witness: PjsuaAgent, method: str
) -> None:
    """svwar over a range holding all five real extensions, as itself and disguised.

    As itself it is dropped (scanner User-Agent). Disguised, the server answers it (svwar logs the
    answer it takes for "no such user"), and with ``--force`` (scan on although an unknown user is
    challenged) the answers for real extensions look the same as for the rest: nothing is found.
    """
    sources = {"plain": attacker(), "disguised": attacker(), "forced": attacker()}
    runs = {}

    async def attack() -> None:
        common = ["-m", method, "-e", SCAN_RANGE, "--maximumtime", "3", *sv_target(AGENTS[1])]
        runs["plain"] = await run_sipvicious("svwar", sources["plain"], common, timeout=40)
        runs["disguised"] = await run_sipvicious("svwar", sources["disguised"], ["--debug", *common],
                                                 user_agent=DISGUISE, timeout=40)
        runs["forced"] = await run_sipvicious("svwar", sources["forced"], ["--force", "--debug", *common],
                                              user_agent=DISGUISE, timeout=40)

    await during_the_call(api, witness, attack())
    for run in runs.values():
        assert run.found_nothing, run.explain()
        for extension in (WITNESS[0], CRACKED[0], CONTROL[0], *OTHERS):
            assert f"'{extension}'" not in run.stderr, run.explain()  # "extension '2001' exists ..."
    assert "socket error: timed out" in runs["plain"].stderr, runs["plain"].explain()  # no answer at all
    for name in ("disguised", "forced"):  # --debug prints every datagram svwar received
        assert "SIP/2.0 " in runs[name].stdout and "timed out" not in runs[name].stderr, runs[name].explain()
    scans = await security_events(api, "security.scanner")
    assert any(e["source"].startswith(f"{sources['plain']}:") for e in scans), scans[-5:]


# -- A4: password cracking ----------------------------------------------------------------------------


async def test_svcrack_is_banned_before_it_reaches_the_password(
    api: httpx.AsyncClient, witness: PjsuaAgent, tmp_path: Path
) -> None:
    # control: with the password second in the list svcrack cracks this server (it speaks our digest)
    control_words = tmp_path / "control.txt"
    control_words.write_text(f"not-it\n{CONTROL[1]}\n")
    control = await run_sipvicious(
        "svcrack", attacker(), ["-u", CONTROL[0], "-d", str(control_words), "--maximumtime", "3",
                                *sv_target(AGENTS[1])], user_agent=DISGUISE, timeout=30)
    assert CONTROL[1] in control.stdout, control.explain()

    # the attack: the real password tenth, after the ban threshold (5 failures)
    cracker = attacker()
    words = tmp_path / "words.txt"
    guesses = [f"guess-{n}" for n in range(1, 10)] + [CRACKED[1], "guess-11", "guess-12"]
    words.write_text("\n".join(guesses) + "\n")
    runs = []

    async def attack() -> None:
        for user_agent in (DISGUISE, None):  # None: as itself, the scanner filter drops it anyway
            runs.append(await run_sipvicious(
                "svcrack", cracker if user_agent else attacker(),
                ["-vv", "-u", CRACKED[0], "-d", str(words), "--maximumtime", "3", *sv_target(AGENTS[1])],
                user_agent=user_agent, timeout=40))

    await during_the_call(api, witness, attack())
    for run in runs:
        assert run.found_nothing, run.explain()
        assert CRACKED[1] not in run.stdout + run.stderr, run.explain()  # never even tried
    ban = await wait_banned(api, cracker)
    assert ban.get("kind") == "source", ban
    event = await banned_event(api, cracker)
    assert event["data"].get("kind") == "source", event
    failures = [e for e in await security_events(api, "security.agent_auth_failed")
                if str((e.get("data") or {}).get("source", e.get("source"))).startswith(f"{cracker}:")]
    assert 1 <= len(failures) <= 6, failures  # banned on the 5th; what was in flight may add one
    tried = [line.split("trying ", 1)[1] for line in runs[0].stderr.splitlines() if "trying " in line]
    print(f"svcrack from {cracker}: tried {tried}, {len(failures)} failures seen, banned: {ban}")
    assert answers_at_all(cracker, AGENTS) is None, "a banned source still gets answers"
    # the extension itself is not locked: five failures are far below lock_after_failures (20)
    assert not [b for b in await active_bans(api) if b.get("key") == CRACKED[0]]


# -- A6: single-source flood -----------------------------------------------------------------------------

FLOOD_RATE = 3000  # requests/s
TRUNK_RATE = 20  # calls/s


@pytest.mark.parametrize("method", ["REGISTER", "INVITE", "OPTIONS"])
async def test_flood_is_banned_within_2s_and_trunk_calls_do_not_fail(
    api: httpx.AsyncClient, tmp_path: Path, method: str
) -> None:
    flooder = attacker()
    trunk_calls = TRUNK_RATE * 6
    trunk = asyncio.create_task(run_sipp(
        SCENARIOS / "uac_basic_short.xml", TRUNK, service=LONG_PROMPT, local_ip="127.0.0.1",
        calls=trunk_calls, extra=["-r", str(TRUNK_RATE), "-l", str(TRUNK_RATE * 4)], timeout_s=40, wait_s=60,
    ))
    await asyncio.sleep(1.0)  # trunk calls under way before the flood starts
    flood = start_flood(AGENTS, flooder, method, FLOOD_RATE, 3.0, tmp_path / "flood")
    try:
        await asyncio.sleep(3.5)
    finally:
        sent = await asyncio.to_thread(flood.stop)
    assert sent >= FLOOD_RATE, f"the flood sent only {sent} requests ({flood.workdir / 'stderr.txt'})"
    event = await banned_event(api, flooder)
    latency = event_time(event) - flood.started
    assert latency <= 2.0, f"banned {latency:.3f}s after the flood started: {event}"
    assert event["data"].get("reason") == "flood", event
    assert answers_at_all(flooder, AGENTS) is None, "banned traffic still gets an answer"
    result = await trunk
    assert result.stat("FailedCall(C)") == 0, result.explain()
    assert result.stat("SuccessfulCall(C)") == trunk_calls, result.explain()
    print(f"{method} flood from {flooder}: {sent} requests, banned after {latency * 1000:.0f} ms")
