"""Media bridging: the caller's and an agent's RTP sessions talk to each other through the engine.

Each direction is a ``_Relay``: the inbound audio of one session (its ``datagram_received``) is
pushed into a small bounded queue that the other session's ``_send_frame`` drains on the engine's
one paced clock. So a bridge adds no task or timer, and each leg keeps its own SSRC, sequence and
timestamps: the peers see one continuous stream before, during and after the bridge.

The queue absorbs jitter between a peer's packet clock and ours: draining starts once
``JITTER_FRAMES`` frames are queued (and again after it ran dry, when silence fills the gap), and it
holds at most ``MAX_QUEUED_FRAMES``: a burst beyond that drops the oldest frames, counted, so latency
stays bounded. A queue that stood longer than needed (after a burst, or a peer's clock running fast)
is trimmed back: when even the fewest frames seen waiting in a window of ``TRIM_WINDOW_FRAMES`` pulls
exceed ``JITTER_FRAMES``, that many oldest frames are dropped.

Same codec on both legs: the payload bytes pass through untouched. PCMU against PCMA: one 256-byte
translation table per direction (``bytes.translate``) does the transcoding, no PCM in between.
Payloads that are not 20 ms (a peer with another ptime) are re-cut into 20 ms frames.

A prompt playing on a leg (hold music to the caller) wins over relayed audio for that leg.
RFC 4733 digits reach the receiving session's ``on_dtmf`` as always, and are then re-sent as RFC
4733 events on the other leg when it negotiated telephone-event (otherwise the upper layer, which got
the digit anyway, may send SIP INFO).

Recording tap (issue 4): ``on_frames(caller_pcm, agent_pcm)`` is called once per engine frame with
the decoded 20 ms the caller and the agent each sent through the bridge in that frame (silence when
nothing was relayed), so a stereo recording is aligned on the engine clock for free.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from helpline.voice.g711 import FRAME_PCM_BYTES, FRAME_SAMPLES, SAMPLE_WIDTH, audioop, codec_by_name
from helpline.voice.rtp import RtpSession

log = logging.getLogger(__name__)

JITTER_FRAMES = 2  # frames queued before a relay starts draining (20-40 ms of added latency)
MAX_QUEUED_FRAMES = 5  # beyond this the oldest frame is dropped (at most 100 ms of latency)
TRIM_WINDOW_FRAMES = 25  # latency above the jitter margin for this long (0.5 s) is trimmed
MIN_RELAYED_DTMF_MS = 40  # a keypress re-sent on the other leg lasts at least this long
DTMF_GAP_MS = 40

_ALL_CODES = bytes(range(256))
_TRANSLATIONS: dict[tuple[str, str], bytes] = {
    ("PCMU", "PCMA"): audioop.lin2alaw(audioop.ulaw2lin(_ALL_CODES, SAMPLE_WIDTH), SAMPLE_WIDTH),
    ("PCMA", "PCMU"): audioop.lin2ulaw(audioop.alaw2lin(_ALL_CODES, SAMPLE_WIDTH), SAMPLE_WIDTH),
}
_SILENT_PCM = bytes(FRAME_PCM_BYTES)


def _translation(source: str, target: str) -> bytes | None:
    """The byte table turning ``source`` G.711 into ``target``; ``None`` when they are the same."""
    if source == target:
        return None
    return _TRANSLATIONS[(source, target)]


@dataclass(frozen=True, slots=True)
class BridgeStats:
    """Counters of one bridge, as a snapshot. a = caller leg, b = agent leg.

    ``relayed_*`` count frames put into the other leg's stream (a prompt playing on that leg drops
    them instead, see ``overridden``); ``transcoded`` counts frames converted PCMU<->PCMA;
    ``dropped_overflow`` frames dropped because the queue was full (a burst); ``trimmed`` frames dropped
    to bring a standing queue back to the jitter margin; ``underflows`` times a relay ran dry and sent
    silence.
    """

    relayed_a_to_b: int
    relayed_b_to_a: int
    transcoded: int
    dropped_overflow: int
    trimmed: int
    underflows: int
    overridden: int
    dtmf_relayed: int
    held: bool
    running: bool


class _Relay:
    """One direction of a bridge: frames received by one session, waiting for the other's tick."""

    __slots__ = ("dropped", "dtmf_relayed", "last", "low", "overridden", "partial", "primed", "queue",
                 "relayed", "table", "target", "transcoded", "trimmed", "underflows", "window")

    def __init__(self, target: RtpSession) -> None:
        self.target = target
        self.queue: deque[bytes] = deque(maxlen=MAX_QUEUED_FRAMES)
        self.table: bytes | None = None
        self.primed = False
        self.partial = b""  # the start of a frame, from a peer whose packets are not 20 ms
        self.last: bytes | None = None  # the frame the target took this tick (for the recording tap)
        self.low = MAX_QUEUED_FRAMES  # fewest frames found waiting at a pull in this trim window
        self.window = TRIM_WINDOW_FRAMES  # pulls left in this trim window
        self.relayed = 0
        self.trimmed = 0
        self.transcoded = 0
        self.dropped = 0
        self.underflows = 0
        self.overridden = 0
        self.dtmf_relayed = 0

    def push(self, payload: bytes) -> None:
        """Queue one inbound payload (per packet: the hot path)."""
        if len(payload) != FRAME_SAMPLES:
            self._push_uneven(payload)
            return
        table = self.table
        if table is not None:
            payload = payload.translate(table)
            self.transcoded += 1
        queue = self.queue
        if len(queue) == MAX_QUEUED_FRAMES:
            self.dropped += 1  # the deque's maxlen drops the oldest on append
        queue.append(payload)

    def _push_uneven(self, payload: bytes) -> None:
        data = self.partial + payload
        end = len(data) - len(data) % FRAME_SAMPLES
        self.partial = data[end:]
        for start in range(0, end, FRAME_SAMPLES):
            self.push(data[start:start + FRAME_SAMPLES])

    def pull(self, silence: bytes) -> bytes:
        """The frame for the target's tick (per frame: the hot path); ``silence`` while buffering."""
        queue = self.queue
        waiting = len(queue)
        if waiting and (self.primed or waiting >= JITTER_FRAMES):
            self.primed = True
            if waiting < self.low:
                self.low = waiting
            self.window -= 1
            if not self.window:
                self._trim()
            self.relayed += 1
            frame = self.last = queue.popleft()
            return frame
        if self.primed:
            self.primed = False
            self.underflows += 1
            self.low = 0
        return silence

    def _trim(self) -> None:
        queue = self.queue
        for _ in range(min(self.low - JITTER_FRAMES, len(queue) - 1)):
            queue.popleft()
            self.trimmed += 1
        self.low = MAX_QUEUED_FRAMES
        self.window = TRIM_WINDOW_FRAMES

    def discard(self) -> None:
        """A prompt plays on the target this tick: the relayed frame is dropped, keeping the pace."""
        queue = self.queue
        if queue and (self.primed or len(queue) >= JITTER_FRAMES):
            self.primed = True
            self.overridden += 1
            self.last = queue.popleft()

    def digit(self, digit: str, duration_ms: int) -> None:
        """Re-send a digit received on the source leg as RFC 4733 events on the target leg."""
        if self.target._queue_dtmf(digit, max(duration_ms, MIN_RELAYED_DTMF_MS), DTMF_GAP_MS):
            self.dtmf_relayed += 1
        else:
            log.debug("dtmf %s not relayed to port %d: no telephone-event there, or its queue is full", digit,
                      self.target.local_port,
                      extra={"call_id": self.target.call_id})

    def reset(self) -> None:
        self.queue.clear()
        self.primed = False
        self.partial = b""
        self.last = None
        self.low = MAX_QUEUED_FRAMES
        self.window = TRIM_WINDOW_FRAMES


class MediaBridge:
    """Relays audio and digits between a caller's session ``a`` and an agent's session ``b``.

    Both sessions belong to one ``MediaEngine`` and are started. ``start()`` connects them, ``hold()``
    pauses the relay both ways (the upper layer plays hold audio on ``a``), ``stop()`` disconnects
    them, leaving both open and sending silence. Closing either session stops the bridge.
    """

    def __init__(self, a: RtpSession, b: RtpSession) -> None:
        if a is b:
            raise ValueError(f"cannot bridge session on port {a.local_port} with itself")
        if a._engine is not b._engine:
            raise ValueError(f"sessions on ports {a.local_port} and {b.local_port} belong to different "
                             "media engines")
        self.a = a
        self.b = b
        self._a_to_b = _Relay(b)
        self._b_to_a = _Relay(a)
        self._running = False
        self._held = False
        self._on_frames: Callable[[bytes, bytes], None] | None = None
        self._tap_registered = False

    # ---- control ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect the two legs (idempotent). ``RuntimeError`` if a leg is closed, not started or
        already in another bridge."""
        if self._running:
            return
        for session in (self.a, self.b):
            if session.closed:
                raise RuntimeError(f"RTP session {session.call_id} on port {session.local_port} is closed")
            if session.negotiated is None:
                raise RuntimeError(f"RTP session {session.call_id} on port {session.local_port} is not "
                                   "started")
            if session._bridge is not None:
                raise RuntimeError(f"RTP session {session.call_id} on port {session.local_port} is "
                                   "already bridged")
        self.a._bridge = self.b._bridge = self
        self._running = True
        self._renegotiated()
        self._sync_tap()
        log.info("bridged port %d (%s) with port %d (%s)", self.a.local_port, self._codec(self.a),
                 self.b.local_port, self._codec(self.b), extra={"call_id": self.a.call_id})

    def stop(self) -> None:
        """Disconnect the legs (idempotent); both sessions stay open and send silence."""
        if not self._running:
            return
        self._running = False
        self._connect(False)
        self.a._bridge = self.b._bridge = None
        self._sync_tap()
        log.info("unbridged port %d from port %d", self.a.local_port, self.b.local_port,
                 extra={"call_id": self.a.call_id})

    def hold(self, held: bool) -> None:
        """Pause (``True``) or resume the relay in both directions. Digits still reach ``on_dtmf``."""
        self._held = held
        if self._running:
            self._connect(not held)

    @property
    def running(self) -> bool:
        """Whether the legs are connected (started, not stopped; hold does not count)."""
        return self._running

    @property
    def held(self) -> bool:
        """Whether the relay is paused by ``hold(True)``."""
        return self._held

    # ---- recording tap ----------------------------------------------------------------------------
    @property
    def on_frames(self) -> Callable[[bytes, bytes], None] | None:
        """Recording tap: ``(caller_pcm, agent_pcm)`` once per engine frame, 20 ms of 8 kHz PCM16 each.

        The caller's channel is the audio relayed a->b in that frame, the agent's what went b->a
        (silence when nothing was relayed, e.g. on hold). Costs nothing while unset.
        """
        return self._on_frames

    @on_frames.setter
    def on_frames(self, callback: Callable[[bytes, bytes], None] | None) -> None:
        self._on_frames = callback
        self._sync_tap()

    def _sync_tap(self) -> None:
        want = self._running and self._on_frames is not None
        if want and not self._tap_registered:
            self.a._engine._add_frame_hook(self._tap)
        elif not want and self._tap_registered:
            self.a._engine._remove_frame_hook(self._tap)
        self._tap_registered = want

    def _tap(self) -> None:
        callback = self._on_frames
        caller, agent = self._a_to_b.last, self._b_to_a.last
        self._a_to_b.last = self._b_to_a.last = None
        if callback is None:
            return
        try:
            callback(self._decode(caller, self.b), self._decode(agent, self.a))
        except Exception:
            log.exception("recording tap failed; tap removed", extra={"call_id": self.a.call_id})
            self.on_frames = None

    @staticmethod
    def _decode(frame: bytes | None, session: RtpSession) -> bytes:
        if frame is None or session.negotiated is None:
            return _SILENT_PCM
        return codec_by_name(session.negotiated.codec).decode(frame)

    # ---- stats ------------------------------------------------------------------------------------
    @property
    def stats(self) -> BridgeStats:
        """A snapshot of the bridge's counters."""
        ab, ba = self._a_to_b, self._b_to_a
        return BridgeStats(
            relayed_a_to_b=ab.relayed, relayed_b_to_a=ba.relayed, transcoded=ab.transcoded + ba.transcoded,
            dropped_overflow=ab.dropped + ba.dropped, trimmed=ab.trimmed + ba.trimmed,
            underflows=ab.underflows + ba.underflows,
            overridden=ab.overridden + ba.overridden, dtmf_relayed=ab.dtmf_relayed + ba.dtmf_relayed,
            held=self._held, running=self._running,
        )

    # ---- wiring -----------------------------------------------------------------------------------
    def _renegotiated(self) -> None:
        """A leg started or took a re-INVITE: pick the transcoding tables again, drop queued audio."""
        self._a_to_b.table = _translation(self._codec(self.a), self._codec(self.b))
        self._b_to_a.table = _translation(self._codec(self.b), self._codec(self.a))
        self._connect(self._running and not self._held)

    @staticmethod
    def _codec(session: RtpSession) -> str:
        assert session.negotiated is not None  # checked by start()
        return session.negotiated.codec.upper()

    def _connect(self, on: bool) -> None:
        self._a_to_b.reset()
        self._b_to_a.reset()
        a_to_b = self._a_to_b if on else None
        b_to_a = self._b_to_a if on else None
        self.a._relay_out = self.b._relay_in = a_to_b
        self.b._relay_out = self.a._relay_in = b_to_a
