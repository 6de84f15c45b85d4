"""Fuzz target: datagrams, ticks and re-INVITEs against two real, bridged ``RtpSession``s.

Per input a real ``MediaEngine`` opens two sessions on 127.0.0.1 (run it inside ``scripts/in-netns``),
starts them from negotiated SDP, bridges them (``MediaBridge``) with the recording taps set, and then
replays a script decoded from the input: datagrams (any bytes, RTP-shaped ones, RFC 4733 keypresses)
handed to ``datagram_received`` (the callback the event loop calls for the socket: nothing catches
there) from the signalled address, from another port or from another host; engine frames (each
active session's ``_send_frame``, then the frame hooks, as ``MediaEngine._tick`` does); re-INVITE
outcomes (``update``: codec, telephone-event type, direction, address); bridge hold/stop/start;
prompts and outgoing digits.

Besides "nothing raises", the properties of the module doc of ``voice/rtp.py`` are checked:

- strict source (A16): once a session latched, its peer only changes after an ``update`` (the
  caller's session has no learn window, so any first source may latch it; the agent's keeps a long
  one, so only the signalled address can), and nothing is ever sent to an address that was neither
  signalled nor latched;
- every digit reported is a keypad digit;
- bounded memory: the digits a leg has queued for sending stay below ``MAX_QUEUED_DTMF_FRAMES`` (half
  a minute of events), whatever the other leg receives (the script itself sends only a few short
  digits, so anything beyond that was relayed from what a peer sent).
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field
from typing import Any

import atheris  # type: ignore[import-untyped]  # FuzzedDataProvider decodes the script

from helpline.voice.bridge import MediaBridge
from helpline.voice.dtmf import EVENT_DIGITS
from helpline.voice.engine import MediaEngine
from helpline.voice.prompts import PromptAudio, PromptCache
from helpline.voice.rtp import RtpSession
from helpline.voice.sdp import negotiate
from tests.fuzz.harness import Finding, fuzz, work_dir

TARGET = "rtp_session"
MAX_LEN = 4096
HOST = "127.0.0.1"
PORTS = (41000, 41099)
MAX_QUEUED_DTMF_FRAMES = 1500  # 30 s of 20 ms event packets
OWN_DIGITS = 5  # digits the script may send itself (at most 22 frames each): the rest come from peers
CALLER_REMOTE = (HOST, 42000)
AGENT_REMOTE = (HOST, 42002)
SOURCES = (CALLER_REMOTE, AGENT_REMOTE, (HOST, 43000), ("127.0.0.2", 42000))
CODEC_FORMATS = ("0", "8", "8 0", "0 8")
TE_PTS = (101, 96, 127, None)
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
PROMPT = PromptAudio(bytes(range(256)) * 10, "fuzz")

_loop = asyncio.new_event_loop()
_prompts = PromptCache(work_dir() / "prompts")  # never read: the script plays a PromptAudio it made


def _offer(address: tuple[str, int], formats: str, te_pt: int | None, direction: str, hold: bool) -> bytes:
    host = "0.0.0.0" if hold else address[0]
    lines = ["v=0", f"o=- 1 1 IN IP4 {host}", "s=-", f"c=IN IP4 {host}", "t=0 0",
             f"m=audio {address[1]} RTP/AVP {formats}{f' {te_pt}' if te_pt is not None else ''}"]
    if te_pt is not None:
        lines.append(f"a=rtpmap:{te_pt} telephone-event/8000")
    lines.append(f"a={direction}")
    return ("\r\n".join(lines) + "\r\n").encode()


class _SentTo:
    """Wraps a session's transport and keeps every destination it sent to."""

    def __init__(self, inner: asyncio.DatagramTransport, sent: list[tuple[str, int]]) -> None:
        self._inner = inner
        self._sent = sent

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self._sent.append(addr)
        self._inner.sendto(data, addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@dataclass
class _Leg:
    session: RtpSession
    remote: tuple[str, int]
    allowed: set[tuple[str, int]] = field(default_factory=set)
    sent: list[tuple[str, int]] = field(default_factory=list)
    digits: list[str] = field(default_factory=list)

    def start(self) -> None:
        self.session.on_dtmf = lambda digit, source: self.digits.append(digit)
        self.session.on_timeout = lambda: None
        self.session.on_audio = lambda pcm: None
        assert self.session._transport is not None
        self.session._transport = _SentTo(self.session._transport, self.sent)  # type: ignore[assignment]
        self.apply(_offer(self.remote, "0 8", 101, "sendrecv", False))

    def apply(self, offer: bytes) -> None:
        negotiated = negotiate(offer, HOST, self.session.local_port)
        self.allowed.add(negotiated.remote)
        if self.session.negotiated is None:
            self.session.start(negotiated)
        else:
            self.session.update(negotiated)


def _datagram(fdp: Any, leg: _Leg) -> bytes:
    """An RTP packet shaped enough to pass the first checks, with fuzzed fields and payload."""
    session = leg.session
    first = fdp.PickValueInList([0x80, 0x80, 0x90, 0xA0, 0x81, fdp.ConsumeIntInRange(0, 255)])
    te_pt = session.negotiated.telephone_event_pt if session.negotiated else None
    pt = fdp.PickValueInList([session._pt, session._pt, te_pt or 101, 13, fdp.ConsumeIntInRange(0, 127)])
    marker = 0x80 if fdp.ConsumeBool() else 0
    header = struct.pack("!BBHII", first, pt | marker, fdp.ConsumeIntInRange(0, 0xFFFF),
                         fdp.ConsumeIntInRange(0, 31), 0x1234)
    payload: bytes = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 400))
    return header + payload


def _keypress(fdp: Any, leg: _Leg) -> bytes:
    """One RFC 4733 packet as a phone sends it, every field from the script."""
    negotiated = leg.session.negotiated
    pt = negotiated.telephone_event_pt if negotiated and negotiated.telephone_event_pt is not None else 101
    header = struct.pack("!BBHII", 0x80, pt, fdp.ConsumeIntInRange(0, 0xFFFF), fdp.ConsumeIntInRange(0, 31),
                         0x1234)
    flags = (0x80 if fdp.ConsumeBool() else 0) | fdp.ConsumeIntInRange(0, 0x3F)
    return header + struct.pack("!BBH", fdp.ConsumeIntInRange(0, 17), flags, fdp.ConsumeIntInRange(0, 0xFFFF))


async def _script(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    engine = MediaEngine(HOST, *PORTS, _prompts, media_timeout=0.2, learn_window=0.0)
    try:
        caller = _Leg(await engine.open_session("fuzz-caller"), CALLER_REMOTE)
        agent = _Leg(await engine.open_session("fuzz-agent"), AGENT_REMOTE)
        agent.session.learn_window = 3600.0  # the agent leg keeps learning; the caller's is locked at once
        for leg in (caller, agent):
            leg.start()
        bridge = MediaBridge(caller.session, agent.session)
        bridge.start()
        bridge.on_frames = lambda a, b: None
        caller.session.tap = lambda heard, sent: None
        plays: list[asyncio.Task[str | None]] = []
        own_digits = OWN_DIGITS
        while fdp.remaining_bytes():
            leg = caller if fdp.ConsumeBool() else agent
            session = leg.session
            latched = session.stats.latched
            op = fdp.ConsumeIntInRange(0, 10)
            if op <= 3:
                session.datagram_received(_datagram(fdp, leg), fdp.PickValueInList(list(SOURCES)))
            elif op == 10:
                session.datagram_received(_keypress(fdp, leg), fdp.PickValueInList(list(SOURCES)))
            elif op == 4:
                session.datagram_received(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 200)),
                                          fdp.PickValueInList(list(SOURCES)))
            elif op == 5:
                for _ in range(fdp.ConsumeIntInRange(1, 8)):
                    for active in engine._active:
                        active._send_frame()
                    engine._run_frame_hooks()
                session._check_timeout(1e9)
            elif op == 6:
                port = fdp.PickValueInList([leg.remote[1], leg.remote[1] + 2])
                latched = None  # a signalled change: learning starts again
                leg.apply(_offer((HOST, port), fdp.PickValueInList(list(CODEC_FORMATS)),
                                 fdp.PickValueInList(list(TE_PTS)), fdp.PickValueInList(list(DIRECTIONS)),
                                 fdp.ConsumeBool()))
            elif op == 7:
                action = fdp.ConsumeIntInRange(0, 2)
                if action == 0:
                    bridge.hold(not bridge.held)
                elif action == 1:
                    bridge.stop()
                else:
                    bridge.start()
            elif op == 8:
                plays.append(_loop.create_task(session.play(PROMPT, barge_in=fdp.ConsumeBool())))
                await asyncio.sleep(0)
            elif own_digits:
                own_digits -= 1
                digit = EVENT_DIGITS[fdp.ConsumeIntInRange(0, len(EVENT_DIGITS) - 1)]
                session._queue_dtmf(digit, fdp.ConsumeIntInRange(40, 400), 60)
            now = session.stats.latched
            if now is not None:
                leg.allowed.add(now)
            if latched is not None and now != latched:
                raise Finding(f"{session.call_id} latched to {latched} moved to {now} without a re-INVITE")
            for each in (caller, agent):
                if len(each.session._dtmf_out) > MAX_QUEUED_DTMF_FRAMES:
                    raise Finding(f"{len(each.session._dtmf_out)} DTMF frames queued on one leg")
        for each in (caller, agent):
            stray = set(each.sent) - each.allowed
            if stray:
                raise Finding(f"RTP sent to {stray}, neither signalled nor latched")
            bad = [d for d in each.digits if d not in EVENT_DIGITS]
            if bad:
                raise Finding(f"non-keypad digits reported: {bad}")
        for play in plays:
            play.cancel()
    finally:
        await engine.close()


def check(data: bytes) -> None:
    """Replay the script ``data`` encodes against a fresh pair of bridged sessions."""
    _loop.run_until_complete(_script(data))


if __name__ == "__main__":
    fuzz(TARGET, check, max_len=MAX_LEN)
