"""One call's RTP stream: a UDP socket, symmetric-RTP latching, playback, DTMF and supervision.

The session does no timing of its own. ``MediaEngine``'s single ticker calls ``_send_frame`` on every
active session once per 20 ms frame, so a thousand calls cost one timer, not a thousand tasks.

Symmetric RTP and RTP bleed (CVE-2017-14099 came from learning the source too eagerly). The rules,
after rtpengine's ``strict-source`` with ``endpoint-learning=heuristic`` and its early return on an
exact match:

1. Until a source is latched we send to the address in the peer's SDP: it was signalled by a party
   the SIP edge already authenticated (a trusted trunk, a registered agent). No unsignalled address
   ever gets a packet before it is latched.
2. A valid RTP packet (version 2, a payload type we negotiated, or comfort noise) from exactly the SDP
   address latches the session and locks it at once: nothing can outrank the signalled address.
3. A valid packet from anywhere else opens the learn window (``learn_window`` seconds from that first
   packet) and is only a *candidate*: its audio and digits are dropped and nothing is sent to it. The
   first source seen is the candidate, replaced once by the first one from the SDP's IP on another
   port (a port-rewriting NAT). A packet from the SDP address during the window still wins (rule 2),
   and then the candidate's held-back packets are counted as foreign. Other sources are foreign.
   When the window is over, the candidate's next packet latches and locks. This is symmetric RTP for
   peers behind NAT whose SDP carries a private address; they lose at most ``learn_window`` of audio
   at the start of the stream. The residual risk, as with rtpengine: an attacker who races such a
   peer (whose SDP address never sends) during the window wins it; SRTP or ICE closes that gap.
4. Locked: a packet from any other source is dropped and counted in ``foreign_packets`` (the first
   one's address in ``first_foreign``). That path is one tuple compare, one attribute test and one
   increment, so a flood of unknown RTP to an allocated port costs almost nothing beyond the event
   loop's own receive (``bench/bench_rtp_foreign.py``). Nothing is ever sent to a foreign source:
   replies only ever go to the latched address (or, before, the SDP one). The socket is deliberately
   not ``connect()``-ed to the latched source, which would drop foreign packets in the kernel: the
   kernel would then answer each with ICMP port unreachable (a reply to the attacker) and none could
   be counted.
5. Learning starts again only through ``update()`` with a *changed* remote address (a re-INVITE or
   UPDATE that moved the stream). One that keeps the address (hold, resume, session refresh, codec
   change) keeps the lock, so a periodic refresh never reopens the race of rule 3.

DTMF flow, so the IVR sees every digit exactly once: RFC 4733 digits go to ``on_dtmf(digit, "rtp")``
and nowhere else. ``play(..., barge_in=True)`` consumes nothing: when a digit is reported it only stops
the playback and returns that same digit, for information. A digit learned elsewhere (SIP INFO) is
delivered by the caller to its own buffer, and ``barge(digit)`` stops the playback the same way.

Bridging (``helpline.voice.bridge.MediaBridge``) hooks in at two points and costs an unbridged
session one attribute test on each: inbound audio payloads go to ``_relay_out`` (a bounded queue the
other leg drains), and ``_send_frame`` takes its frame from ``_relay_in`` when no prompt plays.
Digits still reach ``on_dtmf`` first; the relay then re-sends them on the other leg.

Recording (``tap``): when set, ``_send_frame`` calls it once per tick with ``(heard_pcm, sent_pcm)``,
the decoded 20 ms the peer sent us and the audio frame we sent it, on the engine's one clock so the two
can never drift apart. Inbound audio waits in a queue of at most ``TAP_QUEUE_FRAMES`` (the oldest is
dropped beyond that, bounding the lag); a tick with nothing queued reports silence. An unset tap costs
one attribute test on each path.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from helpline.logs import current_call_id
from helpline.voice.dtmf import DtmfReceiver, dtmf_payloads, is_dtmf_digit
from helpline.voice.g711 import FRAME_PCM_BYTES, FRAME_SAMPLES, G711Codec, codec_by_name
from helpline.voice.prompts import PromptAudio
from helpline.voice.sdp import Negotiated

if TYPE_CHECKING:
    from helpline.voice.bridge import MediaBridge, _Relay
    from helpline.voice.engine import MediaEngine

log = logging.getLogger(__name__)

RTP_VERSION = 2
RTP_HEADER = struct.Struct("!BBHII")
_V2 = RTP_VERSION << 6
_MARKER = 0x80
_COMFORT_NOISE_PT = 13
TAP_QUEUE_FRAMES = 3  # inbound frames waiting for the recording tap; more drops the oldest
MAX_QUEUED_DTMF_FRAMES = 500  # 10 s of outgoing RFC 4733 packets and gaps; more digits are dropped
MAX_DTMF_MS = 8000  # longest keypress we send: an RFC 4733 duration field holds 8.19 s
MAX_DTMF_GAP_MS = 1000  # so the longest keypress and its gap always fit an empty queue
_SILENT_PCM = bytes(FRAME_PCM_BYTES)


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """A parsed RTP packet (CSRCs, header extension and padding stripped)."""

    payload_type: int
    marker: bool
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes


def build_rtp_packet(payload_type: int, sequence: int, timestamp: int, ssrc: int, payload: bytes,
                     *, marker: bool = False) -> bytes:
    """One RTP packet with a plain 12-byte header."""
    return RTP_HEADER.pack(_V2, payload_type | (_MARKER if marker else 0), sequence & 0xFFFF,
                           timestamp & 0xFFFFFFFF, ssrc) + payload


def parse_rtp_packet(data: bytes) -> RtpPacket | None:
    """Parse an RTP packet; ``None`` if it is not well-formed RTP version 2."""
    if len(data) < RTP_HEADER.size or data[0] >> 6 != RTP_VERSION:
        return None
    first, second, sequence, timestamp, ssrc = RTP_HEADER.unpack_from(data)
    offset = RTP_HEADER.size + 4 * (first & 0x0F)
    if first & 0x10:  # header extension: 4-byte header then length in 32-bit words
        if len(data) < offset + 4:
            return None
        offset += 4 + 4 * int.from_bytes(data[offset + 2:offset + 4], "big")
    end = len(data)
    if first & 0x20:  # padding: the last byte says how much
        end -= data[-1]
    if offset > end:
        return None
    return RtpPacket(second & 0x7F, bool(second & _MARKER), sequence, timestamp, ssrc, data[offset:end])


@dataclass(frozen=True, slots=True)
class RtpStats:
    """Counters of one session, as a snapshot."""

    packets_sent: int
    bytes_sent: int
    packets_received: int
    bytes_received: int
    foreign_packets: int
    invalid_packets: int
    dtmf_digits: int
    late_ticks: int
    latched: tuple[str, int] | None
    first_foreign: tuple[str, int] | None = None


class RtpSession(asyncio.DatagramProtocol):
    """One call leg's media. Made by ``MediaEngine.open_session``; see the module doc for the rules."""

    def __init__(self, engine: MediaEngine, call_id: str, local_port: int, *, learn_window: float,
                 media_timeout: float) -> None:
        self.call_id = call_id
        self.local_port = local_port
        self.learn_window = learn_window
        self.media_timeout = media_timeout
        self.on_dtmf: Callable[[str, str], None] = _ignore_dtmf
        self.on_timeout: Callable[[], None] = _ignore_timeout
        self.on_audio: Callable[[bytes], None] | None = None  # decoded 8 kHz PCM16 of inbound frames
        self.negotiated: Negotiated | None = None
        self._engine = engine
        self._transport: asyncio.DatagramTransport | None = None
        self._closed = False
        # send path
        self._codec: G711Codec | None = None
        self._pt = 0
        self._te_pt = -1
        self._ssrc = random.getrandbits(32)
        self._seq = random.getrandbits(16)
        self._ts = random.getrandbits(32)
        self._dest: tuple[str, int] | None = None
        self._sending = False
        self._silence = b""
        self._frames: tuple[bytes, ...] | None = None
        self._audio: PromptAudio | None = None
        self._pos = 0
        self._marker = True
        self._playback: asyncio.Future[str | None] | None = None
        self._barge_in = False
        self._dtmf_out: deque[tuple[bytes, bool]] = deque()
        self._dtmf_ts = 0
        self._dtmf_done: asyncio.Future[None] | None = None
        # bridging (set by MediaBridge): where inbound audio goes, and where outbound frames come from
        self._bridge: MediaBridge | None = None
        self._relay_out: _Relay | None = None
        self._relay_in: _Relay | None = None
        # recording tap: inbound payloads waiting for the next tick (None while no tap is set)
        self._tap: Callable[[bytes, bytes], None] | None = None
        self._heard: deque[bytes] | None = None
        self._heard_partial = b""
        # receive path
        self._sdp_remote: tuple[str, int] | None = None
        self._sdp_ip = ""
        self._peer: tuple[str, int] | None = None  # the latched (locked) source; None while learning
        self._candidate: tuple[str, int] | None = None  # best unsignalled source seen while learning
        self._learn_until = 0.0  # 0: no learn window open
        self._held = 0  # the candidate's packets held back in this window
        self.first_foreign: tuple[str, int] | None = None
        self._dtmf_in = DtmfReceiver(self._digit_received)
        self._expect_media = False
        self._timed_out = False
        self._rx_seen = 0
        self._rx_changed_at = 0.0
        # counters
        self.packets_sent = 0
        self.bytes_sent = 0
        self.packets_received = 0
        self.bytes_received = 0
        self.foreign_packets = 0
        self.invalid_packets = 0
        self.dtmf_digits = 0
        self.dtmf_dropped = 0  # digits not queued for sending because the queue was full
        self._late_ticks_base = 0

    # ---- asyncio protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a peer that is not listening yet; the stream goes on regardless.
        log.debug("rtp socket error on port %d: %s", self.local_port, exc, extra={"call_id": self.call_id})

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            log.warning("rtp socket on port %d lost: %s", self.local_port, exc,
                        extra={"call_id": self.call_id})

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        peer = self._peer
        if addr != peer:
            if peer is not None:  # locked: the whole cost of a foreign packet (rule 4)
                self.foreign_packets += 1
                if self.first_foreign is None:
                    self._note_first_foreign(addr)
                return
            if not self._learn(data, addr):
                return
        if len(data) < 12:
            self.invalid_packets += 1
            return
        pt = data[1] & 0x7F
        if pt == self._te_pt:
            packet = parse_rtp_packet(data)
            if packet is not None:
                self._dtmf_in.feed(packet.timestamp, packet.payload)
            return
        self.packets_received += 1
        self.bytes_received += len(data)
        relay = self._relay_out
        on_audio = self.on_audio
        heard = self._heard
        if pt != self._pt or (relay is None and on_audio is None and heard is None):
            return
        if data[0] == _V2:  # the usual 12-byte header: no CSRC, extension or padding to strip
            payload = data[12:]
        else:
            packet = parse_rtp_packet(data)
            if packet is None:
                return
            payload = packet.payload
        if relay is not None:
            relay.push(payload)
        if heard is not None:
            if len(payload) == FRAME_SAMPLES:
                heard.append(payload)  # the deque's maxlen drops the oldest
            else:
                self._heard_uneven(payload)
        if on_audio is not None and self._codec is not None:
            on_audio(self._codec.decode(payload))

    def _heard_uneven(self, payload: bytes) -> None:
        """Re-cut a peer's non-20 ms payloads into frames for the tap."""
        assert self._heard is not None
        data = self._heard_partial + payload
        end = len(data) - len(data) % FRAME_SAMPLES
        self._heard_partial = data[end:]
        self._heard.extend(data[start:start + FRAME_SAMPLES] for start in range(0, end, FRAME_SAMPLES))

    def _note_first_foreign(self, addr: tuple[str, int]) -> None:
        self.first_foreign = (str(addr[0]), int(addr[1]))
        log.warning("dropping foreign RTP from %s:%d on port %d (latched: %s)", addr[0], addr[1],
                    self.local_port, self._peer, extra={"call_id": self.call_id})

    def _foreign(self, addr: tuple[str, int]) -> bool:
        self.foreign_packets += 1
        if self.first_foreign is None:
            self._note_first_foreign(addr)
        return False

    def _learn(self, data: bytes, addr: tuple[str, int]) -> bool:
        """Rules 2 and 3 of the module doc, for a packet while no source is latched: True = latched now."""
        if self.negotiated is None:
            return False  # before the answer is applied nothing can be judged: dropped, not counted
        if (len(data) < 12 or data[0] >> 6 != RTP_VERSION
                or (data[1] & 0x7F) not in (self._pt, self._te_pt, _COMFORT_NOISE_PT)):
            return self._foreign(addr)
        source = (str(addr[0]), int(addr[1]))
        if source == self._sdp_remote:
            self._latch(addr, "the SDP address")
            return True
        now = time.monotonic()
        candidate = self._candidate
        if candidate is None or (candidate[0] != self._sdp_ip and source[0] == self._sdp_ip):
            if candidate is None:
                self._learn_until = now + self.learn_window
            else:
                self._drop_held(candidate)
            self._candidate = candidate = source
            log.info("rtp learning: candidate %s:%d for %.1f s (sdp said %s)", source[0], source[1],
                     self._learn_until - now, self._sdp_remote, extra={"call_id": self.call_id})
        if source != candidate:
            return self._foreign(addr)
        if now < self._learn_until:
            self._held += 1
            return False  # held back: a candidate gets nothing until the window is over
        self._held = 0  # they were the peer's own: lost audio, not foreign
        self._latch(addr, "the learn window's candidate")
        return True

    def _drop_held(self, candidate: tuple[str, int]) -> None:
        """A candidate lost (to the SDP address, or to one on its IP): what it sent was foreign."""
        if self._held:
            self.foreign_packets += self._held
            self._held = 0
            if self.first_foreign is None:
                self._note_first_foreign(candidate)

    def _latch(self, addr: tuple[str, int], why: str) -> None:
        log.info("rtp latched to %s:%d (%s; sdp said %s)", addr[0], addr[1], why, self._sdp_remote,
                 extra={"call_id": self.call_id})
        if self._candidate is not None and self._candidate != addr:
            self._drop_held(self._candidate)
        self._peer = addr
        self._candidate = None
        self._learn_until = 0.0
        self._held = 0
        if self._sending:
            self._dest = addr

    # ---- signalling -------------------------------------------------------------------------------
    def start(self, negotiated: Negotiated) -> None:
        """Begin the stream the answer describes (silence until something plays)."""
        if self._closed:
            raise RuntimeError(f"RTP session {self.call_id} on port {self.local_port} is closed")
        self._apply(negotiated)
        self._engine._activate(self)

    def update(self, negotiated: Negotiated) -> None:
        """Apply a re-INVITE's outcome: new address, codec or direction (hold).

        Only a changed remote address starts learning again (rule 5 of the module doc).
        """
        if self._closed:
            return
        self._apply(negotiated)

    def _apply(self, negotiated: Negotiated) -> None:
        self.negotiated = negotiated
        codec = codec_by_name(negotiated.codec)
        if codec is not self._codec:
            self._codec = codec
            self._silence = codec.silence_frame
            if self._heard is not None:  # queued payloads are in the old encoding
                self._heard.clear()
                self._heard_partial = b""
            if self._frames is not None and self._audio is not None:
                self._frames = self._audio.frames(codec.name)  # same frame grid, other encoding
        self._pt = negotiated.payload_type
        self._te_pt = negotiated.telephone_event_pt if negotiated.telephone_event_pt is not None else -1
        if self._te_pt < 0 and self._dtmf_out:  # the re-offer dropped telephone-event: no type to send
            log.warning("re-INVITE dropped telephone-event: %d queued DTMF packets discarded",
                        len(self._dtmf_out), extra={"call_id": self.call_id})
            self._dtmf_out.clear()
            if self._dtmf_done is not None and not self._dtmf_done.done():
                self._dtmf_done.set_result(None)
            self._dtmf_done = None
        remote = _normalised(negotiated.remote)
        if remote != self._sdp_remote:  # the stream moved (or first start): learn again (rule 5)
            self._sdp_remote = remote
            self._sdp_ip = remote[0]
            self._peer = None
            self._candidate = None
            self._learn_until = 0.0
            self._held = 0
        self._sending = negotiated.sends
        self._dest = (self._peer or negotiated.remote) if negotiated.sends else None
        self._expect_media = negotiated.receives
        self._timed_out = False
        self._rx_seen = self.packets_received
        self._rx_changed_at = time.monotonic()
        self._marker = True
        if self._bridge is not None:
            self._bridge._renegotiated()

    # ---- playback ---------------------------------------------------------------------------------
    async def play(self, audio: PromptAudio, *, barge_in: bool = True) -> str | None:
        """Play ``audio``; returns ``None`` when it ends (or is stopped), or the digit that cut it.

        The digit is returned for information only: it has already gone to ``on_dtmf``.
        """
        if self._closed:
            return None
        if self._codec is None:
            raise RuntimeError(f"RTP session {self.call_id}: play() before start()")
        self._finish_playback(None)
        frames = audio.frames(self._codec.name)
        if not frames:
            return None
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._frames, self._audio, self._pos, self._marker = frames, audio, 0, True
        self._playback, self._barge_in = future, barge_in
        try:
            return await future
        finally:
            if self._playback is future:  # cancelled while playing
                self._finish_playback(None)

    def stop_playback(self) -> None:
        """Stop whatever plays; its ``play()`` returns ``None``."""
        self._finish_playback(None)

    def barge(self, digit: str) -> bool:
        """A digit arrived another way (SIP INFO): cut a barge-in playback. True if one was cut."""
        if self._playback is not None and self._barge_in:
            self._finish_playback(digit)
            return True
        return False

    def _finish_playback(self, result: str | None) -> None:
        future = self._playback
        self._frames = None
        self._audio = None
        self._playback = None
        if future is not None and not future.done():
            future.set_result(result)

    @property
    def playing(self) -> bool:
        """Whether a prompt is playing."""
        return self._playback is not None

    async def send_dtmf(self, digits: str, duration_ms: int = 100, gap_ms: int = 60) -> None:
        """Send ``digits`` as RFC 4733 events in the outgoing stream (for tests and outbound legs)."""
        if self._te_pt < 0:
            raise RuntimeError(f"RTP session {self.call_id}: no telephone-event payload type negotiated")
        bad = [d for d in digits if not is_dtmf_digit(d)]
        if bad:
            raise ValueError(f"not DTMF digits: {''.join(bad)!r}")
        for digit in digits:
            self._queue_dtmf(digit, duration_ms, gap_ms)
        if not self._dtmf_out:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._dtmf_done = done
        await done

    def _queue_dtmf(self, digit: str, duration_ms: int, gap_ms: int) -> bool:
        """Queue one RFC 4733 keypress and the gap after it; False if no telephone-event was negotiated
        or the queue is full.

        The queue is bounded (``MAX_QUEUED_DTMF_FRAMES``) because a bridge fills it with digits the
        *other* leg's peer sent: a peer pressing keys faster than they can be re-sent (or sending
        endless events) must not grow memory or the latency of the digits after them.
        """
        if self._te_pt < 0 or self._closed:
            return False
        payloads = list(dtmf_payloads(digit, min(duration_ms, MAX_DTMF_MS)))
        gap = [(b"", False)] * max(1, min(gap_ms, MAX_DTMF_GAP_MS) // 20)
        if len(self._dtmf_out) + len(payloads) + len(gap) > MAX_QUEUED_DTMF_FRAMES:
            self.dtmf_dropped += 1
            if self.dtmf_dropped == 1:
                log.warning("dtmf %s not sent on port %d: %d event frames already queued", digit,
                            self.local_port, len(self._dtmf_out), extra={"call_id": self.call_id})
            return False
        self._dtmf_out.extend(payloads)
        self._dtmf_out.extend(gap)
        return True

    # ---- engine hooks -----------------------------------------------------------------------------
    def _send_frame(self) -> None:
        """One 20 ms frame: the next prompt frame, relayed audio, a DTMF event packet, or silence."""
        frames = self._frames
        if frames is not None:
            payload = frames[self._pos]
            self._pos += 1
            if self._pos >= len(frames):
                self._finish_playback(None)
            if self._relay_in is not None:  # the prompt wins: the relayed frame of this tick is dropped
                self._relay_in.discard()
        elif self._relay_in is not None:
            payload = self._relay_in.pull(self._silence)
        else:
            payload = self._silence
        audio = payload
        pt = self._pt
        ts = self._ts
        if self._dtmf_out:
            event, first = self._dtmf_out.popleft()
            if event:
                payload, pt = event, self._te_pt
                if first:
                    self._dtmf_ts = ts
                ts = self._dtmf_ts
                self._marker = first
            else:
                self._marker = True  # audio after an event starts a new talkspurt
            if not self._dtmf_out and self._dtmf_done is not None:
                if not self._dtmf_done.done():
                    self._dtmf_done.set_result(None)
                self._dtmf_done = None
        dest = self._dest
        if dest is not None and self._transport is not None:
            if self._marker:
                pt |= _MARKER
                self._marker = False
            packet = RTP_HEADER.pack(_V2, pt, self._seq, ts, self._ssrc) + payload
            self._transport.sendto(packet, dest)
            self._seq = (self._seq + 1) & 0xFFFF
            self.packets_sent += 1
            self.bytes_sent += len(packet)
        else:
            audio = self._silence  # nothing went out (hold, inactive): the peer heard nothing
        self._ts = (self._ts + FRAME_SAMPLES) & 0xFFFFFFFF
        if self._tap is not None:
            self._tap_frame(audio)

    # ---- recording tap ----------------------------------------------------------------------------
    @property
    def tap(self) -> Callable[[bytes, bytes], None] | None:
        """Recording tap: ``(heard_pcm, sent_pcm)`` once per tick, 320 bytes of 8 kHz PCM16 each.

        ``heard_pcm`` is the oldest queued inbound audio frame (silence when none waits), ``sent_pcm``
        the audio frame sent this tick (silence when a telephone-event packet or nothing went out).
        A tap that raises is logged and removed.
        """
        return self._tap

    @tap.setter
    def tap(self, callback: Callable[[bytes, bytes], None] | None) -> None:
        if callback is not None and self._closed:
            raise RuntimeError(f"RTP session {self.call_id} on port {self.local_port} is closed")
        self._tap = callback
        if callback is None:
            self._heard = None
        elif self._heard is None:
            self._heard = deque(maxlen=TAP_QUEUE_FRAMES)
        self._heard_partial = b""

    def _tap_frame(self, sent: bytes) -> None:
        codec = self._codec
        tap = self._tap
        if codec is None or tap is None:
            return
        heard_queue = self._heard
        heard = codec.decode(heard_queue.popleft()) if heard_queue else _SILENT_PCM
        try:
            tap(heard, _SILENT_PCM if sent is self._silence else codec.decode(sent))
        except Exception:
            log.exception("recording tap failed on port %d; tap removed", self.local_port,
                          extra={"call_id": self.call_id})
            self.tap = None

    def _check_timeout(self, now: float) -> None:
        if not self._expect_media or self._timed_out:
            return
        if self.packets_received != self._rx_seen:
            self._rx_seen = self.packets_received
            self._rx_changed_at = now
        elif now - self._rx_changed_at >= self.media_timeout:
            self._timed_out = True
            log.info("no RTP for %.1f s on port %d", now - self._rx_changed_at, self.local_port,
                     extra={"call_id": self.call_id})
            try:
                self.on_timeout()
            except Exception:
                log.exception("on_timeout handler failed", extra={"call_id": self.call_id})

    def _digit_received(self, digit: str, duration_ms: int) -> None:
        self.dtmf_digits += 1
        token = current_call_id.set(self.call_id)
        try:
            log.info("dtmf %s (%d ms) over rtp", digit, duration_ms)
            self.on_dtmf(digit, "rtp")
        except Exception:
            log.exception("on_dtmf handler failed for digit %s", digit)
        finally:
            current_call_id.reset(token)
        if self._relay_out is not None:
            self._relay_out.digit(digit, duration_ms)
        if self._playback is not None and self._barge_in:
            self._finish_playback(digit)

    # ---- lifecycle --------------------------------------------------------------------------------
    @property
    def stats(self) -> RtpStats:
        """A snapshot of this session's counters."""
        return RtpStats(
            packets_sent=self.packets_sent, bytes_sent=self.bytes_sent,
            packets_received=self.packets_received, bytes_received=self.bytes_received,
            foreign_packets=self.foreign_packets, invalid_packets=self.invalid_packets,
            dtmf_digits=self.dtmf_digits, late_ticks=self._engine.late_ticks - self._late_ticks_base,
            latched=self._peer, first_foreign=self.first_foreign,
        )

    @property
    def closed(self) -> bool:
        """Whether ``close()`` ran."""
        return self._closed

    def close(self) -> None:
        """Stop sending, end any playback and release the port. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.foreign_packets:
            log.info("rtp port %d closed after dropping %d foreign packets (first from %s)", self.local_port,
                     self.foreign_packets, self.first_foreign, extra={"call_id": self.call_id})
        if self._bridge is not None:
            self._bridge.stop()  # the other leg goes on alone, with silence
        self._finish_playback(None)
        if self._dtmf_done is not None and not self._dtmf_done.done():
            self._dtmf_done.set_result(None)
        self._dtmf_out.clear()
        self._engine._release(self)
        if self._transport is not None:
            self._transport.close()
        # A closed session reports nothing more. The owner's callbacks usually point back at the owner
        # (which holds this session), and the DTMF receiver holds our bound method: dropping them lets
        # reference counting free the call at once instead of a rare full cyclic GC pass.
        self.on_dtmf = _ignore_dtmf
        self.on_timeout = _ignore_timeout
        self.on_audio = None
        self.tap = None
        self._dtmf_in.on_digit = _ignore_digit


def _normalised(addr: tuple[str, int]) -> tuple[str, int]:
    """An SDP address in the form the socket reports sources in (``::1``, not ``0:0::1``)."""
    try:
        return str(ipaddress.ip_address(addr[0])), int(addr[1])
    except ValueError:
        return addr


def _ignore_dtmf(digit: str, source: str) -> None:
    log.warning("dtmf %s from %s with no on_dtmf handler set", digit, source)


def _ignore_timeout() -> None:
    log.warning("media timeout with no on_timeout handler set")


def _ignore_digit(digit: str, duration_ms: int) -> None:
    """The DTMF receiver's sink once its session is closed."""
