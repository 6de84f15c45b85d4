"""The media engine: RTP ports, and one paced clock that drives every session's outgoing audio.

Pacing: a single timer callback runs per 20 ms tick for the whole process. Frame ``n`` is due at
``start + n * 20 ms`` on the monotonic clock, never "20 ms after the previous one", so lateness never
accumulates into drift. A tick sends, for every active session in turn, every frame that has come due;
when the loop was late it sends the missed frames at once (the long-run rate stays exact and the
peer's jitter buffer absorbs the burst). A stall longer than ``max_catchup_frames`` is not replayed:
those frames are skipped and counted, since audio that late is worse than a gap.

Frame hooks run once per frame after every session has sent it, so something that must see two
sessions' frames of the same instant (a bridge's recording tap) needs no clock of its own.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from helpline.voice.g711 import FRAME_MS
from helpline.voice.prompts import PromptCache
from helpline.voice.rtp import RtpSession

log = logging.getLogger(__name__)

FRAME_SECONDS = FRAME_MS / 1000
LATE_THRESHOLD = 0.005  # a tick firing this long after its deadline counts as late
TIMEOUT_CHECK_FRAMES = 10  # media-timeout supervision runs every 200 ms
_SOCKET_BUFFER = 256 * 1024


class MediaPortsExhausted(RuntimeError):
    """Every RTP port of the configured range is taken."""


@dataclass(frozen=True, slots=True)
class EngineStats:
    """Counters of the paced clock."""

    sessions: int
    active_sessions: int
    ticks: int
    frames: int
    late_ticks: int
    catchup_frames: int
    skipped_frames: int
    max_lateness_ms: float
    foreign_packets: int = 0
    """RTP packets dropped for their source (RTP bleed, A16), over every session so far."""


class MediaEngine:
    """Owns the RTP port range and the one ticker shared by all sessions (one engine per process)."""

    def __init__(self, host: str, port_min: int, port_max: int, prompts: PromptCache, *,
                 media_timeout: float = 30.0, learn_window: float = 2.0,
                 max_catchup_frames: int = 10) -> None:
        if port_min < 1 or port_max > 65535 or port_min > port_max:
            raise ValueError(f"bad RTP port range {port_min}-{port_max}")
        self.host = host
        self.port_min = port_min + (port_min & 1)
        self.port_max = port_max
        if self.port_min > self.port_max:
            raise ValueError(f"RTP port range {port_min}-{port_max} holds no even port")
        self.prompts = prompts
        self.media_timeout = media_timeout
        self.learn_window = learn_window
        self.max_catchup_frames = max(1, max_catchup_frames)
        self._family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sessions: dict[int, RtpSession] = {}
        self._active: list[RtpSession] = []
        self._frame_hooks: list[Callable[[], None]] = []  # replaced, never mutated, like _active
        self._next_port = self.port_min
        self._timer: asyncio.Handle | None = None
        self._start = 0.0
        self._due = 0  # frames sent since the clock started
        self.ticks = 0
        self.frames = 0
        self.late_ticks = 0
        self.catchup_frames = 0
        self.skipped_frames = 0
        self.max_lateness = 0.0
        self._foreign_of_closed = 0  # foreign packets of sessions already closed
        self.on_session_closed: Callable[[RtpSession], None] | None = None
        """Called once per session as it closes (its counters are final): per-call media reports."""

    # ---- sessions ---------------------------------------------------------------------------------
    async def open_session(self, call_id: str) -> RtpSession:
        """A session bound to a free even port of the range (busy ports are skipped)."""
        loop = asyncio.get_running_loop()
        span = (self.port_max - self.port_min) // 2 + 1
        for _ in range(span):
            port = self._next_port
            self._next_port = port + 2 if port + 2 <= self.port_max else self.port_min
            if port in self._sessions:
                continue
            sock = self._bind(port)
            if sock is None:
                continue
            session = RtpSession(self, call_id, port, learn_window=self.learn_window,
                                 media_timeout=self.media_timeout)
            self._sessions[port] = session
            try:
                await loop.create_datagram_endpoint(lambda s=session: s, sock=sock)  # type: ignore[misc]
            except BaseException:
                del self._sessions[port]
                sock.close()
                raise
            log.debug("rtp session on %s:%d", self.host, port, extra={"call_id": call_id})
            return session
        raise MediaPortsExhausted(f"no free RTP port in {self.host}:{self.port_min}-{self.port_max}")

    def _bind(self, port: int) -> socket.socket | None:
        sock = socket.socket(self._family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
            sock.bind((self.host, port))
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return None
            raise
        return sock

    def _activate(self, session: RtpSession) -> None:
        if session in self._active:
            return
        session._late_ticks_base = self.late_ticks
        self._active = [*self._active, session]
        if self._timer is None:
            self._start = time.monotonic()
            self._due = 0
            self._timer = asyncio.get_running_loop().call_soon(self._tick)

    def _release(self, session: RtpSession) -> None:
        if self._sessions.get(session.local_port) is session:
            del self._sessions[session.local_port]
            self._foreign_of_closed += session.foreign_packets
            if self.on_session_closed is not None:
                try:
                    self.on_session_closed(session)
                except Exception:
                    log.exception("on_session_closed failed for port %d", session.local_port,
                                  extra={"call_id": session.call_id})
        if session in self._active:
            self._active = [s for s in self._active if s is not session]

    def _add_frame_hook(self, hook: Callable[[], None]) -> None:
        """Call ``hook()`` once per frame, after every active session has sent that frame."""
        if hook not in self._frame_hooks:
            self._frame_hooks = [*self._frame_hooks, hook]

    def _remove_frame_hook(self, hook: Callable[[], None]) -> None:
        self._frame_hooks = [h for h in self._frame_hooks if h != hook]

    @property
    def sessions(self) -> list[RtpSession]:
        """Open sessions."""
        return list(self._sessions.values())

    # ---- the clock --------------------------------------------------------------------------------
    def _tick(self) -> None:
        active = self._active
        if not active:
            self._timer = None
            return
        now = time.monotonic()
        due = int((now - self._start) / FRAME_SECONDS) + 1
        count = due - self._due
        if count > 0:
            lateness = now - (self._start + self._due * FRAME_SECONDS)
            self.ticks += 1
            if lateness > LATE_THRESHOLD:
                self.late_ticks += 1
                if lateness > self.max_lateness:
                    self.max_lateness = lateness
            if count > self.max_catchup_frames:
                skipped = count - self.max_catchup_frames
                log.warning("media clock %.0f ms late: skipping %d frames for %d sessions",
                            lateness * 1000, skipped, len(active))
                self.skipped_frames += skipped
                self._due += skipped
                count = self.max_catchup_frames
            self.catchup_frames += count - 1
            for _ in range(count):
                for session in active:
                    try:
                        session._send_frame()
                    except Exception:
                        log.exception("rtp send failed on port %d", session.local_port,
                                      extra={"call_id": session.call_id})
                if self._frame_hooks:
                    self._run_frame_hooks()
                self._due += 1
                if self._due % TIMEOUT_CHECK_FRAMES == 0:
                    for session in active:
                        session._check_timeout(now)
            self.frames += count
        delay = self._start + self._due * FRAME_SECONDS - time.monotonic()
        # Timers have millisecond resolution (uvloop); never ask for less, to avoid spinning.
        self._timer = asyncio.get_running_loop().call_later(max(delay, 0.001), self._tick)

    def _run_frame_hooks(self) -> None:
        for hook in self._frame_hooks:
            try:
                hook()
            except Exception:
                log.exception("media frame hook %r failed", hook)

    @property
    def stats(self) -> EngineStats:
        """A snapshot of the clock's counters."""
        return EngineStats(
            sessions=len(self._sessions), active_sessions=len(self._active), ticks=self.ticks,
            frames=self.frames, late_ticks=self.late_ticks, catchup_frames=self.catchup_frames,
            skipped_frames=self.skipped_frames, max_lateness_ms=self.max_lateness * 1000,
            foreign_packets=self._foreign_of_closed + sum(s.foreign_packets for s in self._sessions.values()),
        )

    async def close(self) -> None:
        """Close every session and stop the clock."""
        for session in list(self._sessions.values()):
            session.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await asyncio.sleep(0)  # let the transports finish closing
