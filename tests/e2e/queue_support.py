"""Shared pieces of the queue's end-to-end tests: a server with queues, agents on the floor, callers.

Each test module runs its own ``helpline serve`` on its own ports and describes it with a
:class:`QueueFloor`; the helpers below create agents over the API, start pjsua2 softphones against the
agent listener, place probe calls through the trunk and read the stored events back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.server import RunningServer, start_server
from tests.sbc_bridge.agents.pjsua_agent import PjsuaAgent
from tests.support.rtp_probe import RtpProbe, make_sdp_offer, sine_pcm16
from tests.support.sip_uac import SipUac, UacCall

CALLER_TONE, AGENT_TONE, HOLD_TONE = 697.0, 1209.0, 440.0
TONES = (CALLER_TONE, AGENT_TONE, HOLD_TONE, 1000.0)
CALLER_PCM = sine_pcm16([CALLER_TONE], 1.0)  # a whole number of cycles: loops without a click


QUICK_AGENTS = {
    "HELPLINE_AGENTS__QUALIFY_INTERVAL_S": "1",
    "HELPLINE_AGENTS__QUALIFY_TIMEOUT_S": "0.5",
    "HELPLINE_AGENTS__MIN_EXPIRES": "10",
}
"""Server environment for floors whose agents come and go within a test: fast qualify, short expiry."""

@dataclass(frozen=True)
class QueueFloor:
    """Where one module's server listens: the trunk side for callers, the agent side for phones."""

    sip_port: int
    agent_port: int
    http_port: int

    def serve(self, tmp: Path, extra: str, env: dict[str, str]) -> Iterator[RunningServer]:
        """The module fixture's body: start, yield, stop, and fail on any error the server logged."""
        srv = start_server(tmp, sip_port=self.sip_port, http_port=self.http_port, extra=extra,
                           agent_port=self.agent_port, env=env)
        yield srv
        code = srv.stop()
        problems = [
            line for line in srv.log_lines()
            if line.get("level") in ("error", "critical") or "Traceback" in str(line.get("raw", ""))
        ]
        assert code == 0, f"helpline serve exited {code}"
        assert not problems, f"server logged errors: {problems[:5]}"

    def pjsua(self, extension: str, password: str, **kwargs: Any) -> PjsuaAgent:
        return PjsuaAgent(registrar=("127.0.0.1", self.agent_port), extension=extension, password=password,
                          **kwargs)

    async def staffed_pjsua(self, api: httpx.AsyncClient, extension: str, password: str, *,
                            state: str = "ready", **kwargs: Any) -> PjsuaAgent:
        """A pjsua2 agent registered, reachable and in ``state`` (the caller stops it)."""
        agent = self.pjsua(extension, password, **kwargs)
        await agent.start()
        await registered(agent)
        await wait_agent(api, extension, reachable=True)
        await presence(api, extension, state)
        return agent

    @contextlib.asynccontextmanager
    async def on_floor(self, api: httpx.AsyncClient, extension: str, password: str, *,
                       state: str = "ready", **kwargs: Any) -> AsyncIterator[PjsuaAgent]:
        """A staffed pjsua2 agent for the duration of the block (see :meth:`staffed_pjsua`)."""
        agent = await self.staffed_pjsua(api, extension, password, state=state, **kwargs)
        try:
            yield agent
        finally:
            await agent.stop()

    async def call_in(self, uac: SipUac, probe: RtpProbe, did: str, **kwargs: Any) -> UacCall:
        """A probe caller through the trunk, answered, sending the caller's tone."""
        call = await uac.invite(f"sip:{did}@127.0.0.1:{self.sip_port}", make_sdp_offer(probe.local_port),
                                **kwargs)
        assert call.status == 200, call.responses
        assert call.media is not None
        probe.use_answer(call.media)
        probe.start_audio(CALLER_PCM)
        return call


async def api_client(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    """The per-test API fixture's body: afterwards every agent goes home, so tests do not meet."""
    async with httpx.AsyncClient(base_url=server.api, timeout=5, headers=server.headers) as client:
        yield client
        for agent in (await client.get("/api/agents")).json()["items"]:
            await client.put(f"/api/agents/{agent['extension']}/presence", json={"presence": "logged_out"})


async def make_agent(api: httpx.AsyncClient, extension: str, *, skills: dict[str, int] | None = None,
                     queues: tuple[str, ...] = ("support",)) -> tuple[str, str]:
    """Create an agent over the API; returns its extension and SIP password."""
    password = f"pw-{extension}-secret"
    body = {"extension": extension, "display_name": f"Agent {extension}", "password": password,
            "skills": skills or {}, "queues": [{"queue": q} for q in queues]}
    response = await api.post("/api/agents", json=body)
    assert response.status_code == 201, response.text
    return extension, password


async def presence(api: httpx.AsyncClient, extension: str, value: str = "ready") -> None:
    response = await api.put(f"/api/agents/{extension}/presence", json={"presence": value})
    assert response.status_code == 200, response.text


async def wait_agent(
    api: httpx.AsyncClient, extension: str, timeout: float = 10.0, **expected: Any
) -> dict[str, Any]:
    """Poll the live agent view until every expected field has its value."""
    last: dict[str, Any] = {}
    try:
        async with asyncio.timeout(timeout):
            while True:
                last = (await api.get(f"/api/agents/{extension}")).json()
                live = last.get("live") or {}
                if all(live.get(k) == v for k, v in expected.items()):
                    return dict(live)
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"agent {extension} never reached {expected}: {last}") from None


async def registered(agent: PjsuaAgent) -> None:
    await agent.wait_event(lambda e: e["event"] == "reg" and e.get("code") == 200 and e.get("active"), 10)


def state_is(state: str) -> Any:
    return lambda e: e["event"] == "call_state" and e["state"] == state


async def hears(probe: RtpProbe, tone: float, who: object, timeout: float = 5.0) -> None:
    """Wait until the caller hears ``tone``; the failure says what it heard and what the agent saw."""
    try:
        await probe.wait_for_tone(tone, timeout=timeout, candidates=TONES)
    except TimeoutError:
        heard = probe.dominant_tone(TONES, since=probe.now() - 1.0)
        raise AssertionError(f"caller never heard {tone} Hz (last second: {heard}); agent: {who}") from None


def events_of(detail: dict[str, Any], type: str) -> list[dict[str, Any]]:
    return [e for e in detail["events"] if e["type"] == type]


def milestones(detail: dict[str, Any]) -> list[str]:
    return [e["data"]["name"] for e in events_of(detail, "ivr.milestone")]


async def ended_call(server: RunningServer, sip_call_id: str) -> dict[str, Any]:
    return await asyncio.to_thread(server.wait_call, sip_call_id=sip_call_id)
