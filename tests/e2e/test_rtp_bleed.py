"""RTP bleed (A16) against a live ``helpline serve``: a foreign sender during a bridged queue call.

The caller is our RTP probe (440 Hz) through the trunk; the agent is a registered probe agent (the
hand-written SIP agent of the agent-listener tests for signalling, an RTP probe for its audio, 1209 Hz),
so both ends' audio is ours to send and to check. While they talk, a sender on 127.0.0.9 (an address
no SDP ever named) plays a 1500 Hz tone at both of the server's media ports, the caller's leg and the
agent's leg, taken from the SDP the server sent, and blasts bursts of the same packets on top. Tone
detection over every 200 ms of what each end heard says whether a single injected packet got through.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.e2e.queue_support import (
    QUICK_AGENTS,
    QueueFloor,
    api_client,
    ended_call,
    events_of,
    make_agent,
    presence,
    wait_agent,
)
from tests.e2e.server import RunningServer
from tests.sbc_bridge.agents.raw_agent import RawAgent
from tests.support.rtp_probe import (
    RtpProbe,
    SdpMedia,
    encode_g711,
    make_sdp_offer,
    parse_sdp,
    sine_pcm16,
    tone_levels,
)
from tests.support.sip_uac import SipUac, UacCall

FLOOR = QueueFloor(sip_port=5600, agent_port=5610, http_port=8160)
SUPPORT = "+18005550106"
FOREIGN_HOST = "127.0.0.9"
MOVED_HOST = "127.0.0.3"  # where the caller's media moves with its re-INVITE
CALLER_TONE, MOVED_TONE, AGENT_TONE, ATTACK_TONE = 440.0, 697.0, 1209.0, 1500.0
TONES = (CALLER_TONE, MOVED_TONE, AGENT_TONE, ATTACK_TONE)
WINDOW = 0.2  # seconds of audio per tone check
RTP_HEADER = struct.Struct("!BBHII")
QUEUE_CONFIG = """
[queues.support]
ring_timeout_s = 5
wrapup_s = 1
"""


def loop_pcm(freq: float) -> bytes:
    return sine_pcm16([freq], 1.0)  # a whole number of cycles: loops without a click


@pytest.fixture(scope="module")
def bserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    env = QUICK_AGENTS
    yield from FLOOR.serve(tmp_path_factory.mktemp("helpline-bleed"), QUEUE_CONFIG, env)


@pytest.fixture
async def api(bserver: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async for client in api_client(bserver):
        yield client


@dataclass
class ProbeAgent:
    """A registered agent whose signalling is ``RawAgent`` and whose audio is an ``RtpProbe``."""

    sip: RawAgent
    probe: RtpProbe

    @classmethod
    async def staffed(cls, api: httpx.AsyncClient, extension: str, password: str) -> ProbeAgent:
        sip = await RawAgent.open(("127.0.0.1", FLOOR.agent_port))
        sip.on_invite = "ring"  # 180 only: the 200 with the probe's SDP is ours to send
        response = await sip.register(extension, password, expires=300)
        assert response.status == 200, response.start_line
        await wait_agent(api, extension, reachable=True)
        await presence(api, extension, "ready")
        return cls(sip, await RtpProbe.open())

    async def answer(self, timeout: float = 10.0) -> SdpMedia:
        """Answer the server's INVITE with the probe's SDP; returns the server's agent-leg media."""
        invite = await self.sip.wait_for(lambda m: not m.is_response and m.method == "INVITE", timeout)
        offered = parse_sdp(invite.text_body)
        _, source = self.sip.invites[invite.call_id]
        answer = make_sdp_offer(self.probe.local_port, codecs=("PCMU",)).encode()
        self.sip.send(self.sip.response_to(invite, 200, "OK", answer), source)
        await self.sip.wait_for(lambda m: not m.is_response and m.method == "ACK", timeout)
        self.probe.set_remote(offered.host, offered.port, codec="PCMU", dtmf_pt=offered.dtmf_pt or 101)
        self.probe.start_audio(loop_pcm(AGENT_TONE))
        return offered

    async def close(self) -> None:
        await self.probe.stop_audio()
        self.probe.close()
        self.sip.close()


class Blaster:
    """Bursts of 1500 Hz PCMU packets from ``FOREIGN_HOST``, on top of the foreign probes' paced stream."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((FOREIGN_HOST, 0))
        self.sock.setblocking(False)
        self.sent: dict[int, int] = {}
        tone = encode_g711(sine_pcm16([ATTACK_TONE], 0.2), "PCMU")
        self.frames = [tone[i:i + 160] for i in range(0, len(tone), 160)]

    async def blast(self, ports: list[int], packets: int, burst: int = 50) -> None:
        """``packets`` to each port, ``burst`` at a time every 5 ms (10k packets/s per port)."""
        for start in range(0, packets, burst):
            for port in ports:
                for n in range(start, min(start + burst, packets)):
                    header = RTP_HEADER.pack(0x80, 0, n & 0xFFFF, (n * 160) & 0xFFFFFFFF, 0xBAD)
                    self.sock.sendto(header + self.frames[n % len(self.frames)], ("127.0.0.1", port))
                    self.sent[port] = self.sent.get(port, 0) + 1
            await asyncio.sleep(0.005)

    def received_anything(self) -> bool:
        try:
            self.sock.recv(2048)
        except BlockingIOError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()


def injected_windows(probe: RtpProbe, since: float, until: float, *, absent: tuple[float, ...],
                     present: float) -> list[str]:
    """Every ``WINDOW`` of received audio in [since, until) where an ``absent`` tone holds more than 5 %
    of the power, or ``present`` does not dominate."""
    bad = []
    t = since
    while t + WINDOW <= until:
        levels = tone_levels(probe.pcm(since=t, until=t + WINDOW), TONES)
        if any(levels[tone] > 0.05 for tone in absent) or levels[present] < 0.5:
            bad.append(f"{t - since:.1f}s: " + ", ".join(f"{k:.0f}={v:.2f}" for k, v in levels.items()))
        t += WINDOW
    return bad


async def foreign_metric(server: RunningServer) -> float:
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(server.api + "/metrics")).text
    match = re.search(r"^helpline_rtp_foreign_packets_total (\S+)$", text, re.MULTILINE)
    assert match, "helpline_rtp_foreign_packets_total is not exported"
    return float(match.group(1))


async def foreign_events(server: RunningServer, sip_call_id: str, legs: int) -> list[dict[str, Any]]:
    """The call's ``media.foreign_packets`` events, once ``legs`` of them are stored (ports close after
    ``call.ended``)."""
    async with asyncio.timeout(10):
        while True:
            detail = await ended_call(server, sip_call_id)
            found = events_of(detail, "media.foreign_packets")
            if len(found) >= legs:
                return found
            await asyncio.sleep(0.2)


async def bridged_call(uac: SipUac, caller: RtpProbe, agent: ProbeAgent) -> tuple[UacCall, SdpMedia]:
    """A trunk call answered by the queue and bridged to ``agent``, both ends hearing the other."""
    call = await uac.invite(f"sip:{SUPPORT}@127.0.0.1:{FLOOR.sip_port}", make_sdp_offer(caller.local_port))
    assert call.status == 200, call.responses
    assert call.media is not None
    caller.use_answer(call.media)
    caller.start_audio(loop_pcm(CALLER_TONE))
    agent_leg = await agent.answer()
    await agent.probe.wait_for_tone(CALLER_TONE, timeout=5, candidates=TONES)
    await caller.wait_for_tone(AGENT_TONE, timeout=5, candidates=TONES)
    return call, agent_leg


async def test_a_foreign_sender_reaches_neither_end_of_a_bridged_call(
    bserver: RunningServer, api: httpx.AsyncClient
) -> None:
    extension, password = await make_agent(api, "3101", skills={"support": 1})
    agent = await ProbeAgent.staffed(api, extension, password)
    blaster = Blaster()
    try:
        async with (
            await SipUac.open() as uac,
            await RtpProbe.open() as caller,
            await RtpProbe.open(FOREIGN_HOST) as at_caller_leg,
            await RtpProbe.open(FOREIGN_HOST) as at_agent_leg,
        ):
            call, agent_leg = await bridged_call(uac, caller, agent)
            assert call.media is not None
            before = await foreign_metric(bserver)
            at_caller_leg.set_remote("127.0.0.1", call.media.port, codec="PCMU")
            at_agent_leg.set_remote(agent_leg.host, agent_leg.port, codec="PCMU")
            start = caller.now()
            at_caller_leg.start_audio(loop_pcm(ATTACK_TONE))
            at_agent_leg.start_audio(loop_pcm(ATTACK_TONE))
            await blaster.blast([call.media.port, agent_leg.port], 2000)
            await asyncio.sleep(2.0)
            end = caller.now()
            await at_caller_leg.stop_audio()
            await at_agent_leg.stop_audio()
            await asyncio.sleep(0.3)
            # nothing ever went back to the foreign source
            assert at_caller_leg.received == [] and at_agent_leg.received == []
            assert not blaster.received_anything()
            # the agent heard the caller only, the caller the agent only, in every 200 ms
            by_agent = injected_windows(agent.probe, start, end, absent=(ATTACK_TONE,), present=CALLER_TONE)
            assert by_agent == [], by_agent
            by_caller = injected_windows(caller, start, end, absent=(ATTACK_TONE,), present=AGENT_TONE)
            assert by_caller == [], by_caller
            assert await call.bye() == 200
            await caller.stop_audio()
        events = {e["data"]["leg"]: e["data"] for e in await foreign_events(bserver, call.call_id, 2)}
        for leg, probe, port in (("caller", at_caller_leg, call.media.port),
                                 ("agent", at_agent_leg, agent_leg.port)):
            data = events[leg]
            assert data["local_port"] == port
            assert probe.sent_packets <= data["count"] <= probe.sent_packets + blaster.sent[port], data
            assert data["first_source"].startswith(f"{FOREIGN_HOST}:"), data
            assert not data["latched"].startswith(f"{FOREIGN_HOST}:"), data
        after = await foreign_metric(bserver)
        assert after - before == events["caller"]["count"] + events["agent"]["count"]
    finally:
        blaster.close()
        await agent.close()


async def test_a_reinvite_moves_the_latch_to_the_signalled_address_and_never_to_a_foreign_one(
    bserver: RunningServer, api: httpx.AsyncClient
) -> None:
    extension, password = await make_agent(api, "3102", skills={"support": 1})
    agent = await ProbeAgent.staffed(api, extension, password)
    blaster = Blaster()
    try:
        async with (
            await SipUac.open() as uac,
            await RtpProbe.open() as caller,
            await RtpProbe.open(MOVED_HOST) as moved,
            await RtpProbe.open(FOREIGN_HOST) as foreign,
        ):
            call, _ = await bridged_call(uac, caller, agent)
            assert call.media is not None
            port = call.media.port
            foreign.set_remote("127.0.0.1", port, codec="PCMU")
            foreign.start_audio(loop_pcm(ATTACK_TONE))  # blasting before, during and after the move
            await asyncio.sleep(0.5)
            offer = make_sdp_offer(moved.local_port, host=MOVED_HOST, session_version=2)
            blasting = asyncio.create_task(blaster.blast([port], 1000))
            assert await call.reinvite(offer) == 200
            moved.use_answer(call.media)
            moved.start_audio(loop_pcm(MOVED_TONE))  # the old address goes on with 440 Hz: now foreign
            switched = caller.now()
            await blasting
            await agent.probe.wait_for_tone(MOVED_TONE, timeout=5, candidates=TONES)
            await moved.wait_for_tone(AGENT_TONE, timeout=5, candidates=TONES)  # we answer the new address
            start = switched + 0.5
            await asyncio.sleep(max(0.0, start + 2.0 - caller.now()))
            heard = injected_windows(agent.probe, start, start + 2.0, absent=(ATTACK_TONE, CALLER_TONE),
                                     present=MOVED_TONE)
            assert heard == [], heard
            assert foreign.received == [] and not blaster.received_anything()
            assert caller.audio_packets(since=switched + 0.3) == [], "the old address still gets our audio"
            await foreign.stop_audio()
            await caller.stop_audio()
            assert await call.bye() == 200
            await moved.stop_audio()
        (event,) = [e["data"] for e in await foreign_events(bserver, call.call_id, 1)]
        assert event["leg"] == "caller"
        assert event["latched"] == f"{MOVED_HOST}:{moved.local_port}"
        assert event["first_source"].startswith(f"{FOREIGN_HOST}:")
        # every packet of the foreign sources and of the old address after the move, and no more
        # (a source held as the learn window's candidate counts once it lost to the new address)
        assert foreign.sent_packets + blaster.sent[port] <= event["count"] <= (
            foreign.sent_packets + blaster.sent[port] + caller.sent_packets), event
    finally:
        blaster.close()
        await agent.close()
