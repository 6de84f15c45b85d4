"""The IVR's view of a live call: prompts go to RTP, digits come from RTP or SIP INFO.

The interpreter is written against the abstract ``Channel``; this is the implementation that talks to a
real caller. The simulator is the other one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from helpline.events import DomainEvent, EventBus
from helpline.ivr.channel import EnqueueSpec, HttpPort, NoRecording, RecordingControl
from helpline.sbc_bridge import InboundCall
from helpline.sbc_bridge.guard.fraud import OutboundPolicy
from helpline.voice import PromptCache, RtpSession
from helpline.voice.prompt_spec import PromptSpec

if TYPE_CHECKING:
    from helpline.queue.runtime import QueueRuntime

log = logging.getLogger(__name__)

DEFAULT_HOLD = PromptSpec(tone_hz=(440.0,), duration_ms=400, label="hold-tone")
HOLD_GAP = PromptSpec(duration_ms=3600, label="hold-gap")


class LiveChannel:
    """Connects one IVR run to one SIP leg and its RTP session."""

    def __init__(
        self,
        *,
        call_id: str,
        call: InboundCall,
        rtp: RtpSession,
        prompts: PromptCache,
        bus: EventBus,
        http: HttpPort,
        on_hangup: Callable[[int | None], None],
        on_transferred: Callable[[str], None],
        queues: QueueRuntime | None = None,
        recording: RecordingControl | None = None,
        outbound: OutboundPolicy | None = None,
    ) -> None:
        self.call_id = call_id
        self.caller = call.caller
        self.did = call.did
        self.trunk = call.trunk
        self.http = http
        self.recording: RecordingControl = recording if recording is not None else NoRecording()
        self._call = call
        self._rtp = rtp
        self._prompts = prompts
        self._bus = bus
        self._on_hangup = on_hangup
        self._on_transferred = on_transferred
        self._queues = queues
        self._outbound = outbound
        self._digits: asyncio.Queue[str] = asyncio.Queue()
        self.masking = False
        # set by the queue while the caller talks to an agent, so SIP INFO digits reach the agent too
        self.on_info_digit: Callable[[str], None] | None = None

    @property
    def rtp(self) -> RtpSession:
        """The caller's media session (the queue bridges it to the agent's)."""
        return self._rtp

    @property
    def caller_name(self) -> str | None:
        return self._call.caller_name

    @property
    def verstat(self) -> str | None:
        """The trunk's STIR/SHAKEN verification result (trusted trunks only), for the agent's offer."""
        return self._call.verstat

    # Input --------------------------------------------------------------------------------------

    def push_digit(self, digit: str) -> None:
        """Called by the call for every DTMF digit, whichever way it arrived."""
        self._digits.put_nowait(digit)

    def info_digit(self, digit: str) -> None:
        """A digit that came by SIP INFO (RFC 4733 ones the media bridge relays by itself)."""
        if self.on_info_digit is not None:
            self.on_info_digit(digit)

    async def next_digit(self, timeout: float) -> str | None:
        try:
            async with asyncio.timeout(timeout):
                return await self._digits.get()
        except TimeoutError:
            return None

    def flush_digits(self) -> None:
        while not self._digits.empty():
            self._digits.get_nowait()

    def mask_input(self, on: bool) -> None:
        self.masking = on

    # Output -------------------------------------------------------------------------------------

    async def play(self, prompts: Sequence[PromptSpec], *, barge_in: bool) -> str | None:
        """Play prompts in order; with barge-in, stop at the first digit, consume it and return it.

        Every digit reaches the input buffer through ``push_digit``; the one that cut the prompt is
        taken out of it here, so the interpreter sees it once, as ``play``'s result.
        """
        for spec in prompts:
            if barge_in and not self._digits.empty():
                return self._digits.get_nowait()  # typed ahead: answers before the prompt starts
            audio = await self._prompts.get(spec)
            cut = await self._rtp.play(audio, barge_in=barge_in)
            if cut is not None and barge_in:
                return self._digits.get_nowait() if not self._digits.empty() else cut
        return None

    async def pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def transfer(self, target: str, timeout: float) -> str:
        """Blind transfer through the trunk with REFER; the outcome comes from its NOTIFYs.

        Every transfer of this call (the flow's ``transfer`` node, an agent's REFER handed on by the
        queue) passes here, so the toll-fraud policy is asked here: a refused target is ``failed``
        without any REFER leaving, and a ``security.fraud_refused`` event says why.
        """
        if self._outbound is not None:
            verdict = self._outbound.allow_transfer(target)
            if not verdict.allowed:
                log.warning("transfer to %r refused by the outbound policy: %s", target, verdict.reason)
                self._bus.publish(DomainEvent.now("security.fraud_refused", self.call_id, {
                    "kind": "transfer", "target": target, "destination": verdict.number,
                    "rule": verdict.rule, "reason": verdict.reason, "trunk": self.trunk,
                }))
                return "failed"
        uri = target if target.startswith(("sip:", "sips:", "tel:")) else self._number_uri(target)
        outcome = await self._call.refer(uri, timeout)
        if outcome == "connected":
            self._on_transferred(uri)  # the caller is elsewhere now: our leg ends, whatever the flow maps
        return outcome

    def _number_uri(self, number: str) -> str:
        host, port = self._call.source
        return f"sip:{number}@{host}:{port}"

    async def enqueue(self, queue: str, spec: EnqueueSpec) -> str:
        """Wait in the queue, talk to an agent, and come back with the outcome.

        Without a queue runtime (no queues configured) the caller hears hold audio until the timeout.
        """
        if self._queues is not None:
            return await self._queues.wait(self, queue, spec)
        hold = list(spec.hold_prompts) if spec.hold_prompts else [DEFAULT_HOLD, HOLD_GAP]
        try:
            async with asyncio.timeout(spec.timeout):
                while True:
                    for item in hold:
                        audio = await self._prompts.get(item)
                        await self._rtp.play(audio, barge_in=False)
        except TimeoutError:
            return "timeout"

    async def hangup(self, sip_code: int | None = None) -> None:
        self._on_hangup(sip_code)

    # Context ------------------------------------------------------------------------------------

    def now(self) -> datetime:
        return datetime.now(UTC)

    def emit(self, type: str, node_id: str | None, data: dict[str, Any]) -> None:
        self._bus.publish(DomainEvent.now(type, self.call_id, data, node_id=node_id))
