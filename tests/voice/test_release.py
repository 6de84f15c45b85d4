"""A closed RtpSession lets go of everything: its port, the engine's clock, and its owner's callbacks.

The collector is off during the test, so what is gone at the end was freed by reference counting: an
owner whose callbacks point back at itself (as a call's do) must not keep a closed session alive, or
every ended call waits for a full cyclic GC pass, which is rare under load.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable
from typing import Any

from helpline.voice import MediaEngine, RtpSession, negotiate
from tests.voice.media_support import HOST, Peer, offer, rtp


class Owner:
    """Stands in for the call: holds the session and hooks its callbacks to itself."""

    def __init__(self, session: RtpSession) -> None:
        self.session = session
        self.digits: list[str] = []
        session.on_dtmf = lambda digit, source: self.digits.append(digit)
        session.on_timeout = self.timed_out
        session.on_audio = self.audio

    def timed_out(self) -> None:
        pass

    def audio(self, pcm: bytes) -> None:
        pass


async def test_closed_session_is_freed_with_its_owner_without_the_cyclic_gc(
    engine: MediaEngine, make_peer: Callable[[], Any]
) -> None:
    peer: Peer = await make_peer()
    gc.collect()
    gc.disable()
    try:
        session = await engine.open_session("call-1")
        session.start(negotiate(offer(peer.port), HOST, session.local_port))
        owner = Owner(session)
        peer.send(rtp(0, 1, 160, b"\xff" * 160), session.local_port)
        await peer.wait_packets(2)  # it latched and sends
        assert session.stats.packets_received == 1
        session.close()
        await asyncio.sleep(0.05)  # the transport lets go of its protocol on the next loop iterations
        refs: list[weakref.ref[Any]] = [weakref.ref(session), weakref.ref(owner)]
        del session, owner
        assert [ref() for ref in refs] == [None, None]
        assert engine.sessions == [] and engine.stats.active_sessions == 0
    finally:
        gc.enable()
