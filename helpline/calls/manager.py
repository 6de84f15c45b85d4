"""Runs every accepted trunk call from answer to hang-up, and turns what happens into domain events.

One ``ActiveCall`` per call: it negotiates media, answers, runs the flow snapshot that was current when
the call arrived, and ends the call exactly once whoever hangs up first (caller BYE, flow hangup, media
timeout, session expiry, shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from helpline.calls.live_channel import LiveChannel
from helpline.events import DomainEvent, EventBus
from helpline.ivr import Flow, FlowRegistry, run_flow
from helpline.ivr.channel import HttpPort
from helpline.logs import current_call_id
from helpline.sbc_bridge import CallEnd, InboundCall, RefusedCall
from helpline.sbc_bridge.guard.fraud import OutboundPolicy
from helpline.voice import (
    MediaEngine,
    MediaPortsExhausted,
    Negotiated,
    NoCommonCodec,
    PromptCache,
    RtpSession,
    SdpError,
    SdpSession,
)

if TYPE_CHECKING:
    from helpline.queue.runtime import QueueRuntime
    from helpline.recording.service import CallRecording, RecordingService

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CallPolicy:
    """The knobs of call handling that come from configuration."""

    media_host: str
    advertised_host: str
    codecs: tuple[str, ...]
    ring_before_answer_s: float
    max_duration_s: float


@dataclass(slots=True)
class _Ending:
    """Who ended the call, decided once: the first report wins."""

    disposition: str = ""
    sip_code: int | None = None
    reason: str = ""
    by: str = ""
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def set(self, disposition: str, sip_code: int | None, reason: str, by: str) -> bool:
        if self.done.is_set():
            return False
        self.disposition, self.sip_code, self.reason, self.by = disposition, sip_code, reason, by
        self.done.set()
        return True


class CallManager:
    """Owns the active calls; the SIP bridge hands it every call that passed the edge policy."""

    def __init__(
        self,
        *,
        bus: EventBus,
        flows: FlowRegistry,
        engine: MediaEngine,
        prompts: PromptCache,
        http: HttpPort,
        policy: CallPolicy,
        queues: QueueRuntime | None = None,
        recordings: RecordingService | None = None,
        outbound: OutboundPolicy | None = None,
    ) -> None:
        self._bus = bus
        self._outbound = outbound  # toll-fraud policy for transfers (None: no check, unit tests only)
        self._queues = queues
        self._recordings = recordings
        self._flows = flows
        self._engine = engine
        self._prompts = prompts
        self._http = http
        self._policy = policy
        self._active: dict[str, ActiveCall] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._accepting = True
        engine.on_session_closed = self._media_closed

    @property
    def active_count(self) -> int:
        return len(self._active)

    async def handle(self, call: InboundCall) -> None:
        """Entry point from the bridge: one task per call, lives until the call ends."""
        active = ActiveCall(self, call)
        token = current_call_id.set(active.id)
        self._active[active.id] = active
        self._idle.clear()
        try:
            if not self._accepting:
                active.refuse(503, "shutting down")
                return
            await active.run()
        finally:
            self._active.pop(active.id, None)
            if not self._active:
                self._idle.set()
            current_call_id.reset(token)

    def on_refused(self, info: RefusedCall) -> None:
        """The edge refused an INVITE: store it as a refused call with its reason."""
        call_id = uuid.uuid4().hex
        self._bus.publish(DomainEvent.now("call.offered", call_id, _offered_data(info)))
        self._bus.publish(
            DomainEvent.now(
                "call.refused", call_id, {"sip_code": info.sip_code, "reason": info.reason}
            )
        )

    def _media_closed(self, session: RtpSession) -> None:
        """A leg's RTP port closed: report the packets its strict-source latch dropped (RTP bleed, A16).

        Sessions are named after the call (``<call id>`` for the caller's leg, ``<call id>-agent`` for
        the queue's agent leg), so the event lands on the call whichever leg was attacked.
        """
        stats = session.stats
        if not stats.foreign_packets:
            return
        call_id, _, leg = session.call_id.partition("-")
        self._bus.publish(DomainEvent.now("media.foreign_packets", call_id, {
            "leg": leg or "caller",
            "count": stats.foreign_packets,
            "first_source": _addr_text(stats.first_foreign),
            "latched": _addr_text(stats.latched),
            "local_port": session.local_port,
        }))

    def on_security(self, type: str, data: dict[str, Any]) -> None:
        """Every refusal or malformed message from the edge, as a structured security event."""
        self._bus.publish(DomainEvent.now(type, None, data))
        log.warning("security event", extra={"event": type, **{f"sec_{k}": v for k, v in data.items()}})

    async def shutdown(self, grace_s: float) -> None:
        """Stop taking calls, end the active ones with BYE, wait for them to finish."""
        self._accepting = False
        for active in list(self._active.values()):
            active.end("completed", None, "shutdown", by="server")
        try:
            async with asyncio.timeout(grace_s):
                await self._idle.wait()
        except TimeoutError:
            log.warning("calls still active after the shutdown grace", extra={"active": len(self._active)})


def _addr_text(addr: tuple[str, int] | None) -> str | None:
    return None if addr is None else f"{addr[0]}:{addr[1]}"


def _offered_data(call: InboundCall | RefusedCall) -> dict[str, Any]:
    return {
        "sip_call_id": call.sip_call_id,
        "trunk": call.trunk,
        "caller": call.caller,
        "caller_name": getattr(call, "caller_name", None),
        "did": call.did,
        "pai": getattr(call, "pai", None),
        "verstat": getattr(call, "verstat", None),
        "source": f"{call.source[0]}:{call.source[1]}",
        "transport": call.transport,
    }


class ActiveCall:
    """One call through its whole life."""

    def __init__(self, manager: CallManager, call: InboundCall) -> None:
        self.id = uuid.uuid4().hex
        self._m = manager
        self._call = call
        self._ending = _Ending()
        self._rtp: RtpSession | None = None
        self._sdp: SdpSession | None = None
        self._answered = False
        self._closed = False  # call.refused or call.ended has been published
        self._recording: CallRecording | None = None

    def _emit(self, type: str, data: dict[str, Any], node_id: str | None = None) -> None:
        self._m._bus.publish(DomainEvent.now(type, self.id, data, node_id=node_id))

    def refuse(self, code: int, reason: str) -> None:
        self._call.reject(code, reason)
        self._closed = True
        self._emit("call.refused", {"sip_code": code, "reason": reason})

    def end(self, disposition: str, sip_code: int | None, reason: str, *, by: str) -> None:
        """Record how the call ends (first caller wins) and wake the call's task."""
        self._ending.set(disposition, sip_code, reason, by)

    async def run(self) -> None:
        try:
            await self._run()
        except Exception as exc:
            # Whatever broke, the caller gets a final answer and the CDR an end: never a call that
            # stays "offered" or "answered" forever.
            log.exception("call handling failed")
            self._close_after_error(exc)
        finally:
            self._teardown()

    def _close_after_error(self, exc: Exception) -> None:
        if self._closed:
            return
        reason = f"internal error: {type(exc).__name__}"
        if not self._answered:
            self.refuse(500, reason)
            return
        self._call.hangup()
        self._closed = True
        self._emit(
            "call.ended", {"disposition": "failed", "sip_code": None, "reason": reason, "by": "server"}
        )

    async def _run(self) -> None:
        call = self._call
        self._emit("call.offered", _offered_data(call))
        flow = self._m._flows.get(call.flow_id)
        if flow is None:
            log.error("DID %s maps to flow %r, which is not loaded", call.did, call.flow_id)
            self.refuse(480, f"flow {call.flow_id} unavailable")
            return
        call.on_ended = self._on_sip_end
        try:
            await self._setup_media()
        except NoCommonCodec as exc:
            self.refuse(488, f"no common codec: {exc}")
            return
        except SdpError as exc:
            self.refuse(488, f"bad SDP: {exc}")
            return
        except MediaPortsExhausted:
            log.error("no free RTP port: the media port range is exhausted")
            self.refuse(503, "media ports exhausted")
            return
        await self._answer_and_run(flow)

    async def _setup_media(self) -> None:
        self._rtp = await self._m._engine.open_session(self.id)
        self._sdp = SdpSession()
        if self._call.sdp_offer is None:
            raise SdpError("INVITE without SDP offer (late offer is not supported)")
        self._negotiated = self._answer_sdp(self._call.sdp_offer)

    def _answer_sdp(self, offer: bytes) -> Negotiated:
        assert self._sdp is not None and self._rtp is not None
        policy = self._m._policy
        return self._sdp.answer(offer, policy.advertised_host, self._rtp.local_port, policy.codecs)

    async def _answer_and_run(self, flow: Flow) -> None:
        call, rtp, policy = self._call, self._rtp, self._m._policy
        assert rtp is not None
        if policy.ring_before_answer_s > 0:
            call.ringing()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(policy.ring_before_answer_s):
                    await self._ending.done.wait()
            if self._ending.done.is_set():
                self._finish_unanswered()
                return
        call.answer(self._negotiated.answer_sdp)
        rtp.start(self._negotiated)
        self._answered = True
        recordings = self._m._recordings
        if recordings is not None:
            self._recording = recordings.for_call(call_id=self.id, caller=call.caller, did=call.did,
                                                  flow_id=flow.id, session=rtp)
        channel = LiveChannel(
            call_id=self.id, call=call, rtp=rtp, prompts=self._m._prompts, bus=self._m._bus,
            http=self._m._http, on_hangup=self._flow_hangup, on_transferred=self._transferred,
            queues=self._m._queues, recording=self._recording, outbound=self._m._outbound,
        )
        rtp.on_dtmf = lambda digit, source: self._digit(channel, digit, source)
        call.on_dtmf = lambda digit, duration: self._info_digit(channel, digit)
        call.on_reoffer = self._reoffer
        rtp.on_timeout = self._media_timeout
        self._emit(
            "call.answered",
            {"codec": self._negotiated.codec, "flow_id": flow.id, "flow_version": flow.version},
        )
        variables = {
            "caller": call.caller, "did": call.did, "call_id": self.id, "trunk": call.trunk,
            "verstat": call.verstat or "",
        }
        flow_task = asyncio.create_task(run_flow(flow, channel, variables), name=f"flow-{self.id}")
        ended = asyncio.create_task(self._ending.done.wait())
        try:
            done, _ = await asyncio.wait(
                {flow_task, ended}, timeout=policy.max_duration_s, return_when=asyncio.FIRST_COMPLETED
            )
            if flow_task in done:
                self._flow_finished(flow_task)
            elif not done:
                self.end("completed", None, "max duration reached", by="server")
        finally:
            ended.cancel()
            if not flow_task.done():
                flow_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await flow_task
        self._finish_answered()

    def _digit(self, channel: LiveChannel, digit: str, source: str) -> None:
        # While a sensitive value is collected the key presses themselves are secret too.
        shown = "*" if channel.masking else digit
        self._emit("dtmf.received", {"digit": shown, "source": source, "masked": channel.masking})
        if self._recording is not None:
            self._recording.digit(digit)  # blanked from the recording; may withdraw consent
        channel.push_digit(digit)

    def _info_digit(self, channel: LiveChannel, digit: str) -> None:
        # RFC 4733 digits interrupt a prompt inside the RTP session; SIP INFO ones must be told to it.
        self._digit(channel, digit, "info")
        if self._rtp is not None:
            self._rtp.barge(digit)
        channel.info_digit(digit)

    def _flow_finished(self, task: asyncio.Task[Any]) -> None:
        exc = task.exception()
        if exc is not None:
            log.error("flow crashed", exc_info=exc)
            self.end("failed", None, f"flow error: {exc}", by="server")
            return
        result = task.result()
        self.end("completed", None, f"flow outcome: {getattr(result, 'outcome', result)}", by="flow")

    def _transferred(self, target: str) -> None:
        self.end("transferred", None, f"transferred to {target}", by="flow")

    def _flow_hangup(self, sip_code: int | None) -> None:
        self.end("completed", sip_code, "flow hangup", by="flow")

    def _media_timeout(self) -> None:
        self._emit("media.timeout", {})
        self.end("failed", None, "media timeout", by="server")

    def _on_sip_end(self, end: CallEnd) -> None:
        if end.by == "cancel":
            disposition = "cancelled"
        elif end.by in ("session_expired", "ack_timeout"):
            disposition = "failed"
        else:
            disposition = "completed" if self._answered else "abandoned"
        self.end(disposition, end.sip_code, end.reason or end.by, by=end.by)

    def _reoffer(self, offer: bytes) -> bytes | None:
        assert self._sdp is not None and self._rtp is not None
        try:
            negotiated = self._answer_sdp(offer)
        except (NoCommonCodec, SdpError) as exc:
            self._emit("sip.reinvite", {"accepted": False, "reason": str(exc)})
            return None
        self._rtp.update(negotiated)
        self._negotiated = negotiated
        self._emit("sip.reinvite", {"accepted": True, "direction": negotiated.direction})
        return negotiated.answer_sdp

    def _finish_unanswered(self) -> None:
        self._closed = True
        e = self._ending
        self._emit("call.ended", {"disposition": e.disposition, "sip_code": e.sip_code or 487,
                                  "reason": e.reason, "by": e.by})

    def _finish_answered(self) -> None:
        self._closed = True
        e = self._ending
        if self._recording is not None:
            self._recording.ended(e.disposition)
        if e.by in ("flow", "server"):
            self._call.hangup()
        self._emit("call.ended", {"disposition": e.disposition, "sip_code": e.sip_code,
                                  "reason": e.reason, "by": e.by})

    def _teardown(self) -> None:
        """Release the RTP port (also when the call was refused after it was opened) and unhook us.

        The callbacks we set on the InboundCall point back at this object, which holds the call: left
        in place, every ended call would wait for a full cyclic GC pass, rare under load.
        """
        call = self._call
        call.on_ended = call.on_dtmf = call.on_reoffer = None
        if self._recording is not None:  # after a crash of the call task too: what was recorded is sealed
            self._recording.ended(self._ending.disposition or "failed")
        if self._rtp is not None:
            self._rtp.close()
