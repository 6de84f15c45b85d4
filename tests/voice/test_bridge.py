"""MediaBridge over real UDP on 127.0.0.1: two RTP probes (a caller's phone and an agent's softphone)
talk through two engine sessions bridged together. Audio is checked by tone detection, DTMF by the
RFC 4733 packets the far probe receives, overflow by the exact payload bytes that come out."""

from __future__ import annotations

import asyncio
import gc
import itertools
import struct
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from helpline.voice import (
    MediaBridge,
    MediaEngine,
    PromptCache,
    PromptSpec,
    RtpSession,
    SdpSession,
    negotiate,
)
from helpline.voice.bridge import JITTER_FRAMES, MAX_QUEUED_FRAMES
from helpline.voice.rtp import MAX_QUEUED_DTMF_FRAMES
from helpline.voice.tones import dominant_tone
from tests.support.rtp_probe import (
    CODEC_BY_PT,
    PAYLOAD_TYPES,
    RtpProbe,
    decode_g711,
    encode_g711,
    make_sdp_offer,
    sine_pcm16,
)
from tests.voice.media_support import HOST

CALLER_HZ = 697.0
AGENT_HZ = 1209.0
HOLD_HZ = 440.0
TONES = (CALLER_HZ, AGENT_HZ, HOLD_HZ, 1000.0)
BOTH = ("PCMU", "PCMA")


def agent_answer(port: int, codec: str, te_pt: int | None) -> bytes:
    """The agent softphone's answer to our offer, written by hand."""
    pt = PAYLOAD_TYPES[codec]
    formats = f"{pt} {te_pt}" if te_pt is not None else str(pt)
    lines = ["v=0", f"o=softphone 9 1 IN IP4 {HOST}", "s=-", f"c=IN IP4 {HOST}", "t=0 0",
             f"m=audio {port} RTP/AVP {formats}", f"a=rtpmap:{pt} {codec}/8000"]
    if te_pt is not None:
        lines += [f"a=rtpmap:{te_pt} telephone-event/8000", f"a=fmtp:{te_pt} 0-15"]
    lines.append("a=sendrecv")
    return ("\r\n".join(lines) + "\r\n").encode()


@dataclass
class Pair:
    engine: MediaEngine
    caller: RtpProbe  # the caller's phone, talking to session a
    agent: RtpProbe  # the agent's softphone, talking to session b
    a: RtpSession
    b: RtpSession
    bridge: MediaBridge
    agent_sdp: SdpSession
    caller_digits: list[str]
    agent_digits: list[str]


Connect = Callable[..., Awaitable[Pair]]


@pytest.fixture
async def connect(engine: MediaEngine) -> AsyncIterator[Connect]:
    """Factory: a caller leg (we answered its offer) and an agent leg (it answered ours), bridged."""
    probes: list[RtpProbe] = []

    async def make(caller_codec: str = "PCMU", agent_codec: str = "PCMU", caller_te: int | None = 101,
                   agent_te: int | None = 101, start: bool = True) -> Pair:
        caller, agent = await RtpProbe.open(HOST), await RtpProbe.open(HOST)
        probes.extend((caller, agent))
        a = await engine.open_session("caller")
        caller_offer = make_sdp_offer(caller.local_port, codecs=(caller_codec,), dtmf_pt=caller_te)
        a.start(negotiate(caller_offer.encode(), HOST, a.local_port))
        caller.set_remote(HOST, a.local_port, caller_codec, caller_te)
        b = await engine.open_session("agent")
        sdp = SdpSession()
        sdp.offer(HOST, b.local_port, BOTH)
        b.start(sdp.accept_answer(agent_answer(agent.local_port, agent_codec, agent_te), offered=BOTH))
        agent.set_remote(HOST, b.local_port, agent_codec, agent_te)
        pair = Pair(engine, caller, agent, a, b, MediaBridge(a, b), sdp, [], [])
        a.on_dtmf = lambda digit, _source: pair.caller_digits.append(digit)
        b.on_dtmf = lambda digit, _source: pair.agent_digits.append(digit)
        if start:
            pair.bridge.start()
        return pair

    yield make
    for probe in probes:
        await probe.stop_audio()
        probe.close()


def tone(freq: float) -> bytes:
    return sine_pcm16([freq], 1.0)  # a whole number of cycles: loops without a click


def levels(probe: RtpProbe, since: float) -> dict[float, float]:
    return probe.tone_levels(TONES, since=since)


async def talk(pair: Pair) -> None:
    """Both phones talk at once, until each hears the other."""
    pair.caller.start_audio(tone(CALLER_HZ))
    pair.agent.start_audio(tone(AGENT_HZ))
    await pair.agent.wait_for_tone(CALLER_HZ, timeout=3, candidates=TONES)
    await pair.caller.wait_for_tone(AGENT_HZ, timeout=3, candidates=TONES)


def assert_hears(probe: RtpProbe, since: float, freq: float) -> None:
    got = levels(probe, since)
    assert got[freq] > 0.9, got
    assert all(share < 0.02 for f, share in got.items() if f != freq), got


def assert_silent(probe: RtpProbe, since: float) -> None:
    got = levels(probe, since)
    assert probe.audio_packets(since=since), "the stream goes on"
    assert all(share < 0.02 for share in got.values()), got


@pytest.mark.parametrize(("caller_codec", "agent_codec"), [("PCMU", "PCMU"), ("PCMU", "PCMA"),
                                                           ("PCMA", "PCMU"), ("PCMA", "PCMA")])
async def test_audio_flows_both_ways_at_once(connect: Connect, caller_codec: str,
                                             agent_codec: str) -> None:
    pair: Pair = await connect(caller_codec, agent_codec)
    await talk(pair)
    since = pair.caller.now()
    await asyncio.sleep(0.6)
    assert_hears(pair.agent, since, CALLER_HZ)  # and not its own 1209 Hz
    assert_hears(pair.caller, since, AGENT_HZ)
    # Each phone receives its leg's own continuous stream, in the codec it negotiated.
    for probe, codec in ((pair.caller, caller_codec), (pair.agent, agent_codec)):
        packets = probe.audio_packets()
        assert {CODEC_BY_PT[p.payload_type] for p in packets} == {codec}
        assert len({p.ssrc for p in packets}) == 1
        assert all((q.seq - p.seq) & 0xFFFF == 1 for p, q in itertools.pairwise(packets))
    stats = pair.bridge.stats
    assert stats.relayed_a_to_b > 25 and stats.relayed_b_to_a > 25
    if caller_codec == agent_codec:
        assert stats.transcoded == 0
    else:
        assert stats.transcoded >= stats.relayed_a_to_b + stats.relayed_b_to_a
    assert stats.dropped_overflow == 0


async def test_same_codec_payloads_pass_through_byte_for_byte(connect: Connect) -> None:
    pair: Pair = await connect()
    # 40 distinct μ-law frames (code 0x7F is the one not to survive the probe's PCM round trip).
    codes = [0x10 + i for i in range(40)]
    pcm = b"".join(decode_g711(bytes([c]) * 160, "PCMU") for c in codes)
    await pair.caller.send_pcm(pcm)
    await asyncio.sleep(0.3)
    got = [p.payload[0] for p in pair.agent.audio_packets() if p.payload != b"\xff" * 160]
    assert got == codes
    assert all(p.payload == bytes([p.payload[0]]) * 160 for p in pair.agent.audio_packets())
    assert pair.bridge.stats.dropped_overflow == 0


@pytest.mark.parametrize("packet_ms", [10, 30])
async def test_a_peer_with_another_ptime_is_recut_into_20_ms_frames(connect: Connect, packet_ms: int) -> None:
    pair: Pair = await connect()
    size = 8 * packet_ms
    ulaw = encode_g711(sine_pcm16([CALLER_HZ], 1.2), "PCMU")
    chunks = [ulaw[i:i + size] for i in range(0, len(ulaw), size)]
    started = pair.agent.now()
    next_at = started
    for chunk in chunks:  # a phone sending ptime 10 or 30: 80 or 240 bytes a packet
        pair.caller._send(0, chunk)
        next_at += packet_ms / 1000
        await asyncio.sleep(max(0.0, next_at - pair.agent.now()))
    await asyncio.sleep(0.2)
    got = pair.agent.tone_levels(TONES, since=started + 0.2, until=started + 1.0)
    assert got[CALLER_HZ] > 0.9, got
    assert {len(p.payload) for p in pair.agent.audio_packets()} == {160}
    assert pair.bridge.stats.relayed_a_to_b >= len(ulaw) // 160 - 2


@pytest.mark.parametrize(("caller_te", "agent_te"), [(101, 101), (101, 96), (96, 101)])
async def test_rfc4733_digits_are_relayed_both_ways_and_still_reported(connect: Connect,
                                                                       caller_te: int, agent_te: int) -> None:
    pair: Pair = await connect(caller_te=caller_te, agent_te=agent_te)
    pair.caller.start_audio()
    pair.agent.start_audio()
    await pair.caller.send_dtmf("5#1", duration_ms=100, gap_ms=100)
    await pair.agent.send_dtmf("9", duration_ms=100, gap_ms=100)
    await asyncio.sleep(0.5)  # the last digit is re-sent once it ended: 100 ms, plus 3 end packets
    assert pair.caller_digits == ["5", "#", "1"]  # the upper layer still gets every digit, once
    assert pair.agent_digits == ["9"]
    events = pair.agent.packets(agent_te)
    assert events[0].marker
    assert {p.payload[0] for p in events} == {5, 11, 1}
    assert sum(1 for p in events if p.payload[1] & 0x80) >= 3  # end packets of each event
    assert not pair.agent.packets(caller_te) or caller_te == agent_te
    assert pair.bridge.stats.dtmf_relayed == 4


async def test_digits_to_a_leg_without_telephone_event_are_only_reported(connect: Connect) -> None:
    pair: Pair = await connect(agent_te=None)
    pair.agent.start_audio()
    await pair.caller.send_dtmf("7", duration_ms=100, gap_ms=100)
    await asyncio.sleep(0.4)
    assert pair.caller_digits == ["7"]
    assert {p.payload_type for p in pair.agent.received} == {0}
    assert pair.bridge.stats.dtmf_relayed == 0


async def test_a_peer_flooding_long_digits_cannot_grow_the_other_legs_queue(connect: Connect) -> None:
    """Found by the rtp_session fuzz target: every digit a peer sends is re-sent on the other leg, so
    a peer sending endless 8 s keypresses must not queue minutes of events (memory and latency)."""
    pair: Pair = await connect()
    pair.agent.start_audio()
    for n in range(40):  # 40 distinct 8-second keypresses, sent at once: start and end packets only
        ts = 1000 + n * 100_000
        pair.caller._send(101, struct.pack("!BBH", 5, 10, 160), marker=True, timestamp=ts)
        for _ in range(3):
            pair.caller._send(101, struct.pack("!BBH", 5, 0x80 | 10, 64000), timestamp=ts)
    await asyncio.sleep(0.3)
    assert pair.caller_digits == ["5"] * 40  # the upper layer still hears every one
    assert pair.bridge.stats.dtmf_relayed == 1  # one 8 s keypress fills the bound; the rest are dropped
    assert pair.b.dtmf_dropped == 39
    assert len(pair.b._dtmf_out) <= MAX_QUEUED_DTMF_FRAMES


async def test_hold_plays_hold_audio_to_the_caller_and_nothing_to_the_agent(connect: Connect) -> None:
    pair: Pair = await connect()
    await talk(pair)
    hold_music = await pair.engine.prompts.get(PromptSpec(tone_hz=(HOLD_HZ,), duration_ms=10000))
    pair.bridge.hold(True)
    playing = asyncio.ensure_future(pair.a.play(hold_music, barge_in=False))
    await asyncio.sleep(0.2)
    since = pair.caller.now()
    await asyncio.sleep(0.6)
    assert_hears(pair.caller, since, HOLD_HZ)
    assert_silent(pair.agent, since)
    held = pair.bridge.stats
    assert held.held
    await asyncio.sleep(0.2)
    assert pair.bridge.stats.relayed_a_to_b == held.relayed_a_to_b  # nothing relayed while held
    pair.bridge.hold(False)
    pair.a.stop_playback()
    assert await asyncio.wait_for(playing, 1) is None
    await pair.agent.wait_for_tone(CALLER_HZ, timeout=2, candidates=TONES)
    await pair.caller.wait_for_tone(AGENT_HZ, timeout=2, candidates=TONES)
    since = pair.caller.now()
    await asyncio.sleep(0.5)
    assert_hears(pair.caller, since, AGENT_HZ)
    assert_hears(pair.agent, since, CALLER_HZ)


async def test_a_prompt_wins_over_relayed_audio_on_its_leg_only(connect: Connect) -> None:
    pair: Pair = await connect()
    await talk(pair)
    notice = await pair.engine.prompts.get(PromptSpec(tone_hz=(1000.0,), duration_ms=800))
    playing = asyncio.ensure_future(pair.a.play(notice, barge_in=False))
    await asyncio.sleep(0.1)
    since = pair.caller.now()
    await asyncio.sleep(0.5)
    assert_hears(pair.caller, since, 1000.0)
    assert_hears(pair.agent, since, CALLER_HZ)  # the other direction is untouched
    await asyncio.wait_for(playing, 2)
    await pair.caller.wait_for_tone(AGENT_HZ, timeout=2, candidates=TONES)
    assert pair.bridge.stats.overridden > 15


async def test_stop_leaves_both_sessions_running_with_silence(connect: Connect) -> None:
    pair: Pair = await connect()
    await talk(pair)
    pair.bridge.stop()
    assert not pair.bridge.running
    await asyncio.sleep(0.15)
    since = pair.caller.now()
    await asyncio.sleep(0.5)
    assert_silent(pair.caller, since)
    assert_silent(pair.agent, since)
    assert len(pair.caller.audio_packets(since=since)) >= 20
    assert len(pair.agent.audio_packets(since=since)) >= 20
    assert not pair.a.closed and not pair.b.closed
    assert pair.a._relay_in is None and pair.a._relay_out is None and pair.b._bridge is None
    pair.bridge.start()  # the same two legs can be bridged again
    await pair.agent.wait_for_tone(CALLER_HZ, timeout=2, candidates=TONES)


async def test_closing_a_leg_stops_the_bridge_and_the_other_goes_on(connect: Connect) -> None:
    pair: Pair = await connect()
    await talk(pair)
    pair.b.close()
    assert not pair.bridge.running
    await asyncio.sleep(0.15)
    since = pair.caller.now()
    await asyncio.sleep(0.4)
    assert_silent(pair.caller, since)


async def test_a_burst_is_bounded_dropping_the_oldest_and_counted(connect: Connect) -> None:
    pair: Pair = await connect()
    await pair.agent.wait_for_packets(5, timeout=2)
    burst = [bytes([0x10 + i]) * 160 for i in range(60)]
    for payload in burst:  # all at once, far more than a jitter buffer should hold
        pair.caller._send(0, payload)
    await asyncio.sleep(0.4)
    got = [p.payload for p in pair.agent.audio_packets() if p.payload in burst]
    # What is left when the burst has been read is its newest frames, at most the queue's cap; a tick
    # may have taken a frame while the burst was being read.
    assert got[-MAX_QUEUED_FRAMES:] == burst[-MAX_QUEUED_FRAMES:]
    assert len(got) <= MAX_QUEUED_FRAMES + 2 and got == sorted(got)
    assert pair.bridge.stats.dropped_overflow == len(burst) - len(got)
    assert pair.bridge.stats.relayed_a_to_b == len(got)


async def test_a_standing_queue_after_a_burst_is_trimmed_back(connect: Connect) -> None:
    pair: Pair = await connect()
    await talk(pair)
    for _ in range(MAX_QUEUED_FRAMES):  # a burst on top of the paced stream: 100 ms more latency
        pair.caller._send(0, bytes([0x10]) * 160)
    await asyncio.sleep(0.1)
    assert len(pair.bridge._a_to_b.queue) >= MAX_QUEUED_FRAMES - 1
    await asyncio.sleep(1.2)
    assert pair.bridge.stats.trimmed >= 2
    assert len(pair.bridge._a_to_b.queue) <= JITTER_FRAMES
    since = pair.caller.now()
    await asyncio.sleep(0.4)
    assert_hears(pair.agent, since, CALLER_HZ)


async def test_codec_change_on_a_re_invite_retunes_transcoding(connect: Connect) -> None:
    pair: Pair = await connect("PCMU", "PCMU")
    await talk(pair)
    assert pair.bridge.stats.transcoded == 0
    pair.agent_sdp.offer(HOST, pair.b.local_port, BOTH)
    reanswer = agent_answer(pair.agent.local_port, "PCMA", 101)
    pair.b.update(pair.agent_sdp.accept_answer(reanswer, offered=BOTH))
    await pair.agent.stop_audio()  # the probe encodes a whole loop of its tone at once
    pair.agent.set_remote(HOST, pair.b.local_port, "PCMA")
    pair.agent.start_audio(tone(AGENT_HZ))
    await pair.caller.wait_for_tone(AGENT_HZ, timeout=2, candidates=TONES)
    since = pair.caller.now()
    await asyncio.sleep(0.5)
    assert_hears(pair.agent, since, CALLER_HZ)
    assert_hears(pair.caller, since, AGENT_HZ)
    assert {CODEC_BY_PT[p.payload_type] for p in pair.agent.audio_packets(since=since)} == {"PCMA"}
    assert pair.bridge.stats.transcoded > 40


async def test_recording_tap_gets_both_voices_aligned_per_frame(connect: Connect) -> None:
    pair: Pair = await connect("PCMU", "PCMA")
    await talk(pair)
    frames: list[tuple[bytes, bytes]] = []
    pair.bridge.on_frames = lambda caller, agent: frames.append((caller, agent))
    await asyncio.sleep(0.6)
    pair.bridge.on_frames = None
    count = len(frames)
    await asyncio.sleep(0.1)
    assert len(frames) == count  # unset: no more calls
    assert 25 <= count <= 35
    assert all(len(c) == 320 and len(a) == 320 for c, a in frames)
    caller = b"".join(c for c, _ in frames[5:])
    agent = b"".join(a for _, a in frames[5:])
    assert dominant_tone(caller, 8000, TONES) == CALLER_HZ
    assert dominant_tone(agent, 8000, TONES) == AGENT_HZ


async def test_bad_bridges_are_refused(connect: Connect, tmp_path: object) -> None:
    pair: Pair = await connect(start=False)
    with pytest.raises(ValueError, match="itself"):
        MediaBridge(pair.a, pair.a)
    other = MediaEngine(HOST, 47000, 47010, PromptCache(tmp_path))  # type: ignore[arg-type]
    try:
        stranger = await other.open_session("x")
        with pytest.raises(ValueError, match="different media engines"):
            MediaBridge(pair.a, stranger)
    finally:
        await other.close()
    idle = await pair.engine.open_session("idle")
    with pytest.raises(RuntimeError, match="not started"):
        MediaBridge(pair.a, idle).start()
    pair.bridge.start()
    with pytest.raises(RuntimeError, match="already bridged"):
        MediaBridge(pair.b, pair.a).start()
    pair.bridge.stop()
    pair.a.close()
    with pytest.raises(RuntimeError, match="closed"):
        pair.bridge.start()


async def test_closed_bridged_legs_are_freed_without_the_cyclic_gc(engine: MediaEngine) -> None:
    caller, agent = await RtpProbe.open(HOST), await RtpProbe.open(HOST)
    gc.collect()
    gc.disable()
    try:
        a = await engine.open_session("caller")
        b = await engine.open_session("agent")
        a.start(negotiate(make_sdp_offer(caller.local_port).encode(), HOST, a.local_port))
        b.start(negotiate(make_sdp_offer(agent.local_port).encode(), HOST, b.local_port))
        bridge = MediaBridge(a, b)
        bridge.start()
        bridge.on_frames = lambda caller_pcm, agent_pcm: None
        caller.set_remote(HOST, a.local_port)
        caller.start_audio(tone(CALLER_HZ))
        await agent.wait_for_tone(CALLER_HZ, timeout=3, candidates=TONES)
        a.close()
        b.close()
        await asyncio.sleep(0.05)  # the transports let go of their protocols on the next iterations
        refs: list[weakref.ref[Any]] = [weakref.ref(a), weakref.ref(b), weakref.ref(bridge)]
        del a, b, bridge
        assert [ref() for ref in refs] == [None, None, None]
        assert engine.sessions == [] and engine._frame_hooks == []
    finally:
        gc.enable()
        await caller.stop_audio()
        caller.close()
        agent.close()
