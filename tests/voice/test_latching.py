"""Strict-source latching (RTP bleed, A16) over real UDP: the five rules of ``helpline.voice.rtp``.

The engine's learn window is 0.4 s here. Attackers send well-formed RTP with the negotiated payload
type (the worst case: only their source gives them away), from another IP (127.0.0.9) or from the
peer's own IP on another port. What reaches the call is checked on ``on_audio`` by tone: the peer
sends 440 Hz, attackers 1500 Hz.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from helpline.voice import MediaEngine, RtpSession, negotiate
from helpline.voice.g711 import PCMU
from helpline.voice.tones import dominant_tone, synthesize_tone
from tests.voice.media_support import HOST, Peer, offer, rtp

MakePeer = Callable[[], Any]
FOREIGN_HOST = "127.0.0.9"
PEER_TONE, ATTACK_TONE = 440.0, 1500.0
TONES = [PEER_TONE, ATTACK_TONE]
LEARN_WINDOW = 0.4  # tests/voice/conftest.py


def tone_frames(freq: float, count: int) -> list[bytes]:
    """``count`` 20 ms PCMU frames of a continuous ``freq`` tone."""
    pcm = synthesize_tone([freq], count * 20, 8000)
    return [PCMU.encode(pcm[i * 320:(i + 1) * 320]) for i in range(count)]


PEER_FRAMES = tone_frames(PEER_TONE, 10)
ATTACK_FRAMES = tone_frames(ATTACK_TONE, 10)


@pytest.fixture
async def foreign_peer() -> AsyncIterator[Peer]:
    """An attacker on another address than every signalled one."""
    _, peer = await asyncio.get_running_loop().create_datagram_endpoint(Peer, local_addr=(FOREIGN_HOST, 0))
    yield peer
    peer.close()


class Heard:
    """What reached the call: the decoded audio ``on_audio`` got."""

    def __init__(self, session: RtpSession) -> None:
        self.pcm: list[bytes] = []
        session.on_audio = self.pcm.append

    def tone(self, since: int = 0) -> float | None:
        return dominant_tone(b"".join(self.pcm[since:]), 8000, TONES)


def send(peer: Peer, frames: list[bytes], port: int, seq: int, *, ssrc: int = 0x1234) -> None:
    for i, frame in enumerate(frames):
        peer.send(rtp(0, seq + i, (seq + i) * 160, frame, ssrc=ssrc), port)


async def started(engine: MediaEngine, sdp_port: int, address: str = HOST) -> RtpSession:
    session = await engine.open_session("call-1")
    session.start(negotiate(offer(sdp_port, address=address), HOST, session.local_port))
    return session


async def test_the_sdp_address_locks_at_once_and_foreign_sources_get_nothing(
    engine: MediaEngine, make_peer: MakePeer, foreign_peer: Peer
) -> None:
    signalled: Peer = await make_peer()
    same_ip: Peer = await make_peer()  # the peer's own IP, another port
    session = await started(engine, signalled.port)
    heard = Heard(session)
    send(signalled, PEER_FRAMES[:2], session.local_port, 1)
    await signalled.wait_packets(2)
    assert session.stats.latched == (HOST, signalled.port)  # no window to wait for
    for round_ in range(5):  # inside what would have been the learn window, and after it
        send(foreign_peer, ATTACK_FRAMES, session.local_port, 100, ssrc=0xBAD)
        send(same_ip, ATTACK_FRAMES, session.local_port, 100, ssrc=0xBAD)
        send(signalled, PEER_FRAMES, session.local_port, 10 + 10 * round_)
        await asyncio.sleep(0.1)
    assert foreign_peer.received == [] and same_ip.received == []
    stats = session.stats
    assert stats.foreign_packets == 100
    assert stats.first_foreign == (FOREIGN_HOST, foreign_peer.port)
    assert stats.packets_received == 52
    assert heard.tone() == PEER_TONE
    assert engine.stats.foreign_packets == 100


async def test_an_intruder_in_the_learn_window_gets_nothing_and_loses_to_the_sdp_address(
    engine: MediaEngine, make_peer: MakePeer, foreign_peer: Peer
) -> None:
    signalled: Peer = await make_peer()
    session = await started(engine, signalled.port)
    heard = Heard(session)
    send(foreign_peer, ATTACK_FRAMES, session.local_port, 1, ssrc=0xBAD)  # first to arrive
    await asyncio.sleep(0.1)
    assert session.stats.latched is None
    assert heard.pcm == [], "a candidate's audio reached the call"
    before = len(signalled.received)
    await signalled.wait_packets(before + 2)  # we still send to the signalled address only
    send(signalled, PEER_FRAMES, session.local_port, 1)  # the real peer, still inside the window
    await asyncio.sleep(0.05)
    assert session.stats.latched == (HOST, signalled.port)
    await asyncio.sleep(LEARN_WINDOW)  # past the window the intruder still does not win
    send(foreign_peer, ATTACK_FRAMES, session.local_port, 20, ssrc=0xBAD)
    await asyncio.sleep(0.1)
    assert foreign_peer.received == []
    assert session.stats.latched == (HOST, signalled.port)
    assert session.stats.foreign_packets == 20  # held as a candidate, counted once the candidate lost
    assert session.stats.first_foreign == (FOREIGN_HOST, foreign_peer.port)
    assert heard.tone() == PEER_TONE


async def test_a_peer_behind_nat_latches_when_the_window_ends_and_only_then(
    engine: MediaEngine, make_peer: MakePeer, foreign_peer: Peer
) -> None:
    nat: Peer = await make_peer()  # where the packets really come from
    session = await started(engine, 9, address="192.0.2.10")  # the SDP says a private/unreachable address
    heard = Heard(session)
    send(nat, PEER_FRAMES[:1], session.local_port, 1)  # opens the window: the nat peer is the candidate
    await asyncio.sleep(0.05)
    send(foreign_peer, ATTACK_FRAMES, session.local_port, 1, ssrc=0xBAD)  # a later source: foreign
    for i in range(3):
        send(nat, PEER_FRAMES[:1], session.local_port, 2 + i)
        await asyncio.sleep(0.05)
    assert session.stats.latched is None and nat.received == [] and heard.pcm == []
    await asyncio.sleep(LEARN_WINDOW)
    send(nat, PEER_FRAMES, session.local_port, 10)
    await nat.wait_packets(3)  # latched: now we answer it (symmetric RTP)
    assert session.stats.latched == (HOST, nat.port)
    send(foreign_peer, ATTACK_FRAMES, session.local_port, 20, ssrc=0xBAD)
    await asyncio.sleep(0.1)
    assert foreign_peer.received == []
    assert session.stats.foreign_packets == 20
    assert heard.tone() == PEER_TONE


async def test_a_candidate_on_the_sdp_ip_outranks_an_earlier_one_elsewhere(
    engine: MediaEngine, make_peer: MakePeer, foreign_peer: Peer
) -> None:
    nat: Peer = await make_peer()  # the SDP's IP, but not its port (a port-rewriting NAT)
    session = await started(engine, 9)
    send(foreign_peer, ATTACK_FRAMES[:1], session.local_port, 1, ssrc=0xBAD)
    await asyncio.sleep(0.02)
    send(nat, PEER_FRAMES[:1], session.local_port, 1)
    await asyncio.sleep(LEARN_WINDOW + 0.05)
    send(foreign_peer, ATTACK_FRAMES[:1], session.local_port, 2, ssrc=0xBAD)
    send(nat, PEER_FRAMES[:1], session.local_port, 2)
    await nat.wait_packets(2)
    assert session.stats.latched == (HOST, nat.port)
    assert foreign_peer.received == []


async def test_a_reinvite_that_keeps_the_address_keeps_the_lock(
    engine: MediaEngine, make_peer: MakePeer, foreign_peer: Peer
) -> None:
    nat: Peer = await make_peer()
    sdp_port = 9
    session = await started(engine, sdp_port)
    send(nat, PEER_FRAMES[:1], session.local_port, 1)
    await asyncio.sleep(LEARN_WINDOW + 0.05)
    send(nat, PEER_FRAMES[:1], session.local_port, 2)
    await nat.wait_packets(2)
    assert session.stats.latched == (HOST, nat.port)
    # hold, resume and a plain refresh: same address every time, so no new learning race
    for direction in ("sendonly", "sendrecv", "sendrecv"):
        session.update(negotiate(offer(sdp_port, direction=direction), HOST, session.local_port))
        send(foreign_peer, ATTACK_FRAMES[:2], session.local_port, 1, ssrc=0xBAD)
        await asyncio.sleep(0.05)
        assert session.stats.latched == (HOST, nat.port), direction
    got = len(nat.received)
    await nat.wait_packets(got + 3)  # resumed: still sent to the latched source, not the SDP port
    assert foreign_peer.received == []
    assert session.stats.foreign_packets == 6


async def test_a_reinvite_that_moves_the_stream_learns_the_new_address_and_still_not_a_foreign_one(
    engine: MediaEngine, make_peer: MakePeer, foreign_peer: Peer
) -> None:
    old: Peer = await make_peer()
    new: Peer = await make_peer()
    session = await started(engine, old.port)
    heard = Heard(session)
    send(old, PEER_FRAMES[:2], session.local_port, 1)
    await old.wait_packets(1)
    assert session.stats.latched == (HOST, old.port)
    session.update(negotiate(offer(new.port), HOST, session.local_port))
    assert session.stats.latched is None  # learning again, sending to the new SDP address
    await new.wait_packets(2)
    send(foreign_peer, ATTACK_FRAMES, session.local_port, 1, ssrc=0xBAD)  # races the move
    await asyncio.sleep(0.05)
    send(new, PEER_FRAMES, session.local_port, 1)
    await asyncio.sleep(0.05)
    assert session.stats.latched == (HOST, new.port)
    mark = len(heard.pcm)
    old_got = len(old.received)
    send(foreign_peer, ATTACK_FRAMES, session.local_port, 20, ssrc=0xBAD)
    send(old, ATTACK_FRAMES, session.local_port, 20)  # the old address is foreign now too
    send(new, PEER_FRAMES, session.local_port, 20)
    await asyncio.sleep(0.1)
    assert foreign_peer.received == []
    assert len(old.received) - old_got <= 1  # at most one packet in flight at the switch
    assert heard.tone(mark) == PEER_TONE
    assert session.stats.first_foreign == (FOREIGN_HOST, foreign_peer.port)


async def test_closing_reports_the_final_counts_once_and_the_engine_keeps_the_total(
    engine: MediaEngine, make_peer: MakePeer, foreign_peer: Peer
) -> None:
    closed: list[tuple[str, int, tuple[str, int] | None]] = []
    engine.on_session_closed = lambda s: closed.append((s.call_id, s.stats.foreign_packets,
                                                        s.stats.first_foreign))
    signalled: Peer = await make_peer()
    session = await started(engine, signalled.port)
    send(signalled, PEER_FRAMES[:1], session.local_port, 1)
    await signalled.wait_packets(1)
    await asyncio.sleep(0.05)
    send(foreign_peer, ATTACK_FRAMES[:7], session.local_port, 1)
    await asyncio.sleep(0.1)
    session.close()
    session.close()
    assert closed == [("call-1", 7, (FOREIGN_HOST, foreign_peer.port))]
    other = await started(engine, signalled.port)
    send(foreign_peer, ATTACK_FRAMES[:1], other.local_port, 1)
    await asyncio.sleep(0.05)
    assert engine.stats.foreign_packets == 7  # other's one packet is a learning candidate, not foreign
    other.close()
