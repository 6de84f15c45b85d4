"""The recording tap of ``RtpSession`` over real UDP on 127.0.0.1: what the peer sent and what went out,
one call per tick on the engine clock, aligned, with telephone-events never reported as audio."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

from helpline.voice import MediaBridge, MediaEngine, PromptAudio, RtpSession, SdpSession, negotiate
from helpline.voice.g711 import codec_by_name
from helpline.voice.tones import dominant_tone
from tests.support.rtp_probe import RtpProbe, make_sdp_offer, sine_pcm16
from tests.voice.media_support import HOST, Peer, rtp
from tests.voice.test_bridge import agent_answer

CALLER_HZ = 400.0  # 8 whole cycles a frame: a frame dropped or repeated under load leaves a clean tone
AGENT_HZ = 1000.0
PROMPT_HZ = 697.0
TONES = [CALLER_HZ, AGENT_HZ, PROMPT_HZ, 1209.0]


@dataclass
class TapLog:
    """What the tap received, with the session's sent-packet count at each call."""

    session: RtpSession
    heard: list[bytes] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)
    packets: list[int] = field(default_factory=list)

    def __call__(self, heard: bytes, sent: bytes) -> None:
        self.heard.append(heard)
        self.sent.append(sent)
        self.packets.append(self.session.packets_sent)


def dominant(frames: list[bytes]) -> float | None:
    return dominant_tone(b"".join(frames), 8000, TONES, 0.8)


def loud(frame: bytes) -> bool:
    return float(np.abs(np.frombuffer(frame, "<i2")).max()) > 1000


async def wait_until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


def onsets(flags: list[bool]) -> list[int]:
    return [i for i, on in enumerate(flags) if on and (i == 0 or not flags[i - 1])]


@dataclass
class Bridged:
    a: RtpSession
    b: RtpSession
    caller: RtpProbe
    agent: RtpProbe
    bridge: MediaBridge


@pytest.fixture
async def bridged(engine: MediaEngine) -> AsyncIterator[Bridged]:
    caller, agent = await RtpProbe.open(HOST), await RtpProbe.open(HOST)
    a = await engine.open_session("caller")
    a.start(negotiate(make_sdp_offer(caller.local_port, codecs=("PCMU",)).encode(), HOST, a.local_port))
    caller.set_remote(HOST, a.local_port, "PCMU", 101)
    b = await engine.open_session("agent")
    sdp = SdpSession()
    sdp.offer(HOST, b.local_port, ("PCMA", "PCMU"))
    b.start(sdp.accept_answer(agent_answer(agent.local_port, "PCMA", 101), offered=("PCMA", "PCMU")))
    agent.set_remote(HOST, b.local_port, "PCMA", 101)
    bridge = MediaBridge(a, b)
    bridge.start()
    yield Bridged(a, b, caller, agent, bridge)
    for probe in (caller, agent):
        await probe.stop_audio()
        probe.close()


async def test_heard_is_the_caller_and_sent_is_the_relay_the_prompt_then_silence_for_digits(
        engine: MediaEngine, bridged: Bridged) -> None:
    a = bridged.a
    bridged.caller.start_audio(sine_pcm16([CALLER_HZ], 1.0))
    bridged.agent.start_audio(sine_pcm16([AGENT_HZ], 1.0))
    await bridged.caller.wait_for_tone(AGENT_HZ, timeout=3, candidates=TONES)
    log = TapLog(a)
    frames_before = engine.frames
    a.tap = log
    await asyncio.sleep(0.6)
    # a prompt to the caller wins over the relay, and the tap reports it
    prompt_started = len(log.sent)
    await a.play(PromptAudio(sine_pcm16([PROMPT_HZ], 0.4)), barge_in=False)
    prompt_ended = len(log.sent)
    await asyncio.sleep(0.2)
    # RFC 4733 digits sent to the caller replace the audio packets; the tap still gets the audio
    digits_started = len(log.sent)
    await a.send_dtmf("5", duration_ms=200)
    digits_ended = len(log.sent)
    a.tap = None
    frames_after = engine.frames
    count = len(log.sent)
    await asyncio.sleep(0.1)
    assert len(log.sent) == count  # nothing after the tap was unset
    assert count == frames_after - frames_before  # once per engine tick, no more, no less
    assert np.all(np.diff(log.packets) == 1)  # each call came with exactly one packet sent
    assert all(len(f) == 320 for f in log.heard + log.sent)
    assert dominant(log.heard[5:prompt_started]) == CALLER_HZ
    assert dominant(log.sent[5:prompt_started]) == AGENT_HZ
    assert prompt_ended - prompt_started == pytest.approx(20, abs=1)
    assert dominant(log.sent[prompt_started + 1:prompt_ended - 1]) == PROMPT_HZ
    assert dominant(log.heard[prompt_started:prompt_ended]) == CALLER_HZ
    assert digits_ended - digits_started >= 10
    assert dominant(log.sent[digits_started + 2:digits_ended - 2]) == AGENT_HZ
    assert dominant(log.heard[digits_started:digits_ended]) == CALLER_HZ
    assert a.stats.packets_sent > 0


async def test_sent_and_heard_are_aligned_on_one_clock(engine: MediaEngine, make_peer: object) -> None:
    """An echoing phone: what we send comes back at once, so heard must follow sent by a small,
    constant number of frames (network plus the tap's queue), burst after burst."""

    class Echo(Peer):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            super().datagram_received(data, addr)
            if data[1] & 0x7F == 0 and self.transport is not None:
                self.seq = getattr(self, "seq", 0) + 1
                self.transport.sendto(rtp(0, self.seq, self.seq * 160, data[12:]), addr)

    _, echo = await asyncio.get_running_loop().create_datagram_endpoint(Echo, local_addr=(HOST, 0))
    try:
        session = await engine.open_session("echo")
        offer = make_sdp_offer(echo.port, codecs=("PCMU",)).encode()
        session.start(negotiate(offer, HOST, session.local_port))
        log = TapLog(session)
        session.tap = log
        burst = sine_pcm16([AGENT_HZ], 0.1)  # 5 frames of tone, then 10 of silence, six times
        pattern = PromptAudio((burst + bytes(len(burst) * 2)) * 6)
        await session.play(pattern, barge_in=False)
        await asyncio.sleep(0.2)
        session.tap = None
        sent_on = [loud(f) for f in log.sent]
        heard_on = [loud(f) for f in log.heard]
        sent_onsets, heard_onsets = onsets(sent_on), onsets(heard_on)
        assert len(sent_onsets) == len(heard_onsets) == 6
        lags = {h - s for s, h in zip(sent_onsets, heard_onsets, strict=True)}
        assert len(lags) == 1 and 0 <= lags.pop() <= 4
        assert sum(sent_on) == sum(heard_on) == 30
    finally:
        echo.close()


async def test_at_most_three_inbound_frames_wait_and_the_oldest_go(engine: MediaEngine,
                                                                   make_peer: object) -> None:
    peer: Peer = await make_peer()  # type: ignore[operator]
    session = await engine.open_session("burst")
    session.start(negotiate(make_sdp_offer(peer.port, codecs=("PCMU",)).encode(), HOST, session.local_port))
    log = TapLog(session)
    session.tap = log
    await asyncio.sleep(0.1)
    codes = list(range(0x10, 0x1A))  # ten distinct μ-law frames in one burst
    for i, code in enumerate(codes):
        peer.send(rtp(0, i, i * 160, bytes([code]) * 160), session.local_port)
    await wait_until(lambda: any(f != bytes(320) for f in log.heard))
    await asyncio.sleep(0.2)
    session.tap = None
    got = [f for f in log.heard if f != bytes(320)]
    decode = codec_by_name("PCMU").decode
    assert got == [decode(bytes([c]) * 160) for c in codes[-3:]]


async def test_a_failing_tap_is_removed_and_the_stream_goes_on(engine: MediaEngine, make_peer: object,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    peer: Peer = await make_peer()  # type: ignore[operator]
    session = await engine.open_session("fail")
    session.start(negotiate(make_sdp_offer(peer.port, codecs=("PCMU",)).encode(), HOST, session.local_port))
    calls: list[int] = []

    def broken(heard: bytes, sent: bytes) -> None:
        calls.append(1)
        raise RuntimeError("disk on fire")

    session.tap = broken
    await wait_until(lambda: calls and session.tap is None)
    before = len(peer.received)
    await peer.wait_packets(before + 5)
    assert calls == [1]
    assert "recording tap failed" in caplog.text
    session.close()
    with pytest.raises(RuntimeError, match="closed"):
        session.tap = broken
