"""RtpSession over real UDP on 127.0.0.1: audio content, DTMF, barge-in, latching, timeouts, ports."""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import pytest

from helpline.voice import MediaEngine, MediaPortsExhausted, PromptCache, PromptSpec, RtpSession, negotiate
from helpline.voice.g711 import codec_by_name
from helpline.voice.tones import detect_tones, dominant_tone
from tests.voice.media_support import HOST, Peer, offer, rtp

MakePeer = Callable[[], Any]


async def started_session(engine: MediaEngine, peer: Peer, sdp: bytes | None = None) -> RtpSession:
    session = await engine.open_session("call-1")
    session.start(negotiate(sdp or offer(peer.port), HOST, session.local_port))
    return session


def audio_of(packets: list[tuple[float, tuple[str, int], bytes]], pt: int) -> bytes:
    codec = codec_by_name("PCMU" if pt == 0 else "PCMA")
    return b"".join(codec.decode(data[12:]) for _, _, data in packets if data[1] & 0x7F == pt)


@pytest.mark.parametrize(("formats", "pt"), [("0 101", 0), ("8 101", 8)])
async def test_tone_prompt_arrives_as_that_tone(engine: MediaEngine, make_peer: MakePeer, formats: str,
                                                pt: int) -> None:
    peer: Peer = await make_peer()
    session = await started_session(engine, peer, offer(peer.port, formats))
    tone = await engine.prompts.get(PromptSpec(tone_hz=(1000.0,), duration_ms=600))
    await asyncio.sleep(0.1)
    mark = len(peer.received)
    async with asyncio.timeout(3):
        assert await session.play(tone) is None
    await asyncio.sleep(0.05)  # play() returns once the last frame is sent, not received
    played = peer.received[mark:]
    assert len(played) >= 30
    first = played[0][2]
    assert first[1] & 0x80, "marker bit on the first packet of the prompt"
    assert dominant_tone(audio_of(played, pt), 8000, [440.0, 1000.0, 1400.0, 2100.0]) == 1000.0
    silence = audio_of(peer.received[:mark], pt)
    assert silence and max(detect_tones(silence, 8000, [1000.0]).values()) == 0.0
    seqs = [struct.unpack_from("!H", d, 2)[0] for _, _, d in peer.received]
    stamps = [struct.unpack_from("!I", d, 4)[0] for _, _, d in peer.received]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    assert all((b - a) & 0xFFFFFFFF == 160 for a, b in itertools.pairwise(stamps))
    assert len({struct.unpack_from("!I", d, 8)[0] for _, _, d in peer.received}) == 1  # one SSRC
    assert session.stats.packets_sent >= len(peer.received)


def dtmf_packets(event: int, ts: int, seq: int, *, pt: int = 101, steps: int = 3, ends: int = 3,
                 send_end: bool = True) -> list[bytes]:
    """A keypress as a phone sends it: growing durations, then the end packet three times."""
    out = [rtp(pt, seq + i, ts, struct.pack("!BBH", event, 10, 160 * (i + 1)), marker=i == 0)
           for i in range(steps)]
    if send_end:
        out += [rtp(pt, seq + steps + i, ts, struct.pack("!BBH", event, 0x80 | 10, 160 * (steps + 1)))
                for i in range(ends)]
    return out


@pytest.mark.parametrize("te_pt", [96, 101])
async def test_rfc4733_digits_reach_on_dtmf_exactly_once(engine: MediaEngine, make_peer: MakePeer,
                                                         te_pt: int) -> None:
    peer: Peer = await make_peer()
    sdp = offer(peer.port, f"0 {te_pt}", extra=f"a=rtpmap:{te_pt} telephone-event/8000")
    session = await started_session(engine, peer, sdp)
    digits: list[tuple[str, str]] = []
    session.on_dtmf = lambda digit, source: digits.append((digit, source))
    packets = (dtmf_packets(1, 8000, 10, pt=te_pt) + dtmf_packets(1, 9600, 20, pt=te_pt)  # "11"
               + dtmf_packets(5, 11200, 30, pt=te_pt, send_end=False)  # end packets lost
               + dtmf_packets(11, 12800, 40, pt=te_pt) + dtmf_packets(12, 14400, 50, pt=te_pt))
    for packet in packets:
        peer.send(packet, session.local_port)
        await asyncio.sleep(0.002)
    for packet in dtmf_packets(11, 12800, 40, pt=te_pt)[-3:]:  # late retransmissions of '#'
        peer.send(packet, session.local_port)
    await asyncio.sleep(0.2)
    assert digits == [("1", "rtp"), ("1", "rtp"), ("5", "rtp"), ("#", "rtp"), ("A", "rtp")]
    assert session.stats.dtmf_digits == 5
    assert session.stats.packets_received == 0  # events are not counted as audio


async def test_barge_in_returns_the_digit_which_also_reaches_on_dtmf(engine: MediaEngine,
                                                                    make_peer: MakePeer) -> None:
    peer: Peer = await make_peer()
    session = await started_session(engine, peer)
    digits: list[str] = []
    session.on_dtmf = lambda digit, _source: digits.append(digit)
    long_tone = await engine.prompts.get(PromptSpec(tone_hz=(440.0,), duration_ms=5000))
    play = asyncio.ensure_future(session.play(long_tone, barge_in=True))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    for packet in dtmf_packets(7, 4000, 1):
        peer.send(packet, session.local_port)
    async with asyncio.timeout(2):
        assert await play == "7"
    assert time.monotonic() - started < 1.0
    assert digits == ["7"]
    assert not session.playing


async def test_without_barge_in_a_digit_does_not_stop_the_prompt(engine: MediaEngine,
                                                                 make_peer: MakePeer) -> None:
    peer: Peer = await make_peer()
    session = await started_session(engine, peer)
    digits: list[str] = []
    session.on_dtmf = lambda digit, _source: digits.append(digit)
    tone = await engine.prompts.get(PromptSpec(tone_hz=(440.0,), duration_ms=600))
    started = time.monotonic()
    play = asyncio.ensure_future(session.play(tone, barge_in=False))
    await asyncio.sleep(0.1)
    for packet in dtmf_packets(3, 4000, 1):
        peer.send(packet, session.local_port)
    async with asyncio.timeout(3):
        assert await play is None
    assert time.monotonic() - started >= 0.55
    assert digits == ["3"]


async def test_stop_playback_and_sip_info_barge(engine: MediaEngine, make_peer: MakePeer) -> None:
    peer: Peer = await make_peer()
    session = await started_session(engine, peer)
    tone = await engine.prompts.get(PromptSpec(tone_hz=(440.0,), duration_ms=5000))
    play = asyncio.ensure_future(session.play(tone))
    await asyncio.sleep(0.1)
    session.stop_playback()
    async with asyncio.timeout(1):
        assert await play is None
    play = asyncio.ensure_future(session.play(tone, barge_in=True))
    await asyncio.sleep(0.1)
    assert session.barge("9")
    async with asyncio.timeout(1):
        assert await play == "9"
    assert not session.barge("9")


async def test_send_dtmf_between_two_sessions(engine: MediaEngine) -> None:
    a = await engine.open_session("a")
    b = await engine.open_session("b")
    a.start(negotiate(offer(b.local_port), HOST, a.local_port))
    b.start(negotiate(offer(a.local_port), HOST, b.local_port))
    got: list[str] = []
    b.on_dtmf = lambda digit, _source: got.append(digit)
    async with asyncio.timeout(5):
        await a.send_dtmf("1#1*9D", duration_ms=60, gap_ms=40)
    await asyncio.sleep(0.1)
    assert "".join(got) == "1#1*9D"


async def test_a_reinvite_dropping_telephone_event_discards_queued_digits(
    engine: MediaEngine, make_peer: MakePeer, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by the rtp_session fuzz target: digits queued under one offer, then a re-offer without
    telephone-event left no payload type to send them with, and the engine's tick raised."""
    peer: Peer = await make_peer()
    session = await started_session(engine, peer)
    sending = asyncio.create_task(session.send_dtmf("123", duration_ms=200))
    await peer.wait_packets(2)
    session.update(negotiate(offer(peer.port, "0"), HOST, session.local_port))  # no 101 any more
    async with asyncio.timeout(0.1):
        await sending  # released at once, not left waiting for digits that will never go out
    mark = len(peer.received)
    await peer.wait_packets(mark + 5)
    assert {data[1] & 0x7F for _, _, data in peer.received[mark:]} == {0}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "the engine's tick raised"


# Latching and RTP bleed: tests/voice/test_latching.py.


async def test_packets_that_are_not_our_rtp_do_not_latch(engine: MediaEngine, make_peer: MakePeer) -> None:
    signalled: Peer = await make_peer()
    other: Peer = await make_peer()
    session = await started_session(engine, signalled)
    other.send(b"\x00" * 40, session.local_port)  # not RTP v2
    other.send(rtp(34, 1, 0, bytes(100)), session.local_port)  # a payload type we did not negotiate
    await asyncio.sleep(0.1)
    assert session.stats.latched is None
    assert session.stats.foreign_packets == 2
    assert other.received == []


async def test_media_timeout_fires_once_after_rtp_stops(engine: MediaEngine, make_peer: MakePeer) -> None:
    peer: Peer = await make_peer()
    session = await started_session(engine, peer)
    fired: list[float] = []
    session.on_timeout = lambda: fired.append(time.monotonic())
    for i in range(40):  # 0.8 s of audio, longer than the 0.6 s timeout
        peer.send(rtp(0, i, i * 160, bytes(160)), session.local_port)
        await asyncio.sleep(0.02)
    assert fired == []
    stopped = time.monotonic()
    await asyncio.sleep(1.5)
    assert len(fired) == 1
    assert 0.5 <= fired[0] - stopped <= 1.0


@pytest.mark.parametrize("hold", ["sendonly", "inactive"])
async def test_no_media_timeout_while_on_hold(engine: MediaEngine, make_peer: MakePeer, hold: str) -> None:
    peer: Peer = await make_peer()
    session = await started_session(engine, peer)
    fired: list[float] = []
    session.on_timeout = lambda: fired.append(time.monotonic())
    session.update(negotiate(offer(peer.port, direction=hold), HOST, session.local_port))
    await asyncio.sleep(0.1)
    held_at = len(peer.received)
    await asyncio.sleep(1.2)
    assert fired == []
    assert len(peer.received) - held_at == 0  # we stop sending to a peer that holds
    session.update(negotiate(offer(peer.port), HOST, session.local_port))  # resume, still silent
    await asyncio.sleep(1.2)
    assert len(fired) == 1
    assert len(peer.received) > held_at


async def test_c_zero_hold_stops_sending_but_playback_still_finishes(engine: MediaEngine,
                                                                     make_peer: MakePeer) -> None:
    peer: Peer = await make_peer()
    session = await started_session(engine, peer, offer(peer.port, address="0.0.0.0"))
    tone = await engine.prompts.get(PromptSpec(tone_hz=(440.0,), duration_ms=200))
    async with asyncio.timeout(2):
        assert await session.play(tone) is None
    assert peer.received == []
    assert session.stats.packets_sent == 0


async def test_ports_are_even_busy_ones_skipped_and_released_on_close(tmp_path: Any) -> None:
    low = 41000
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind((HOST, low))
    engine = MediaEngine(HOST, low - 1, low + 4, PromptCache(tmp_path))  # even ports 41000, 41002, 41004
    try:
        a = await engine.open_session("a")
        b = await engine.open_session("b")
        assert {a.local_port, b.local_port} == {low + 2, low + 4}
        with pytest.raises(MediaPortsExhausted):
            await engine.open_session("c")
        a.close()
        await asyncio.sleep(0.05)  # the transport closes its socket on the next loop iteration
        c = await engine.open_session("c")
        assert c.local_port == a.local_port
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with pytest.raises(OSError):
            probe.bind((HOST, c.local_port))
        probe.close()
    finally:
        busy.close()
        await engine.close()


async def test_a_late_loop_sends_the_missed_frames(engine: MediaEngine, make_peer: MakePeer) -> None:
    peer: Peer = await make_peer()
    await started_session(engine, peer)
    await peer.wait_packets(5)
    started = time.monotonic()
    first = len(peer.received)
    time.sleep(0.1)  # noqa: ASYNC251 - block the loop on purpose: five frames fall due meanwhile
    await asyncio.sleep(0.5)
    sent = len(peer.received) - first
    elapsed = time.monotonic() - started
    assert abs(sent - elapsed / 0.02) <= 2
    assert engine.stats.catchup_frames >= 4
    assert engine.stats.late_ticks >= 1
