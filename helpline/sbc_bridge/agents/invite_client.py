"""The client INVITE transaction (RFC 3261 §17.1.1, with RFC 6026's Accepted state).

aiosipua's UAC sends an INVITE once and never ACKs a final non-2xx answer, so an agent that
declines keeps retransmitting its 486 (seen: five times) and believes the call is still up. This
transaction does what the RFC asks:

- Timer A: over UDP the INVITE is retransmitted at T1, 2*T1, 4*T1 ... until a response arrives.
- Timer B: no response at all within 64*T1 means the peer is unreachable.
- A 1xx stops retransmission (and Timer B); the transaction user decides how long to ring.
- A 3xx-6xx is ACKed here, with the INVITE's branch, Request-URI, Route and the response's To
  (§17.1.1.3), and every retransmission of it is ACKed again until Timer D (32 s over UDP).
- A 2xx, first or retransmitted, goes to the transaction user, which sends its own ACK (a
  transaction of its own, §13.2.2.4); the transaction stays 64*T1 to catch retransmitted 2xx.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Literal, Protocol

from aiosipua.message import SipRequest, SipResponse

from ..transport import _top_branch
from .wire import AgentWire

logger = logging.getLogger(__name__)

Addr = tuple[str, int]
State = Literal["calling", "proceeding", "accepted", "completed", "terminated"]
TIMER_D_UDP = 32.0


class InviteUser(Protocol):
    """What the transaction reports to the one who sent the INVITE."""

    def provisional(self, client: InviteClient, response: SipResponse) -> None: ...
    def accepted(self, client: InviteClient, response: SipResponse) -> None: ...
    def rejected(self, client: InviteClient, response: SipResponse) -> None: ...
    def timed_out(self, client: InviteClient) -> None: ...
    def transport_failed(self, client: InviteClient, error: Exception) -> None: ...


class InviteClient:
    """One INVITE we sent, and its responses, matched by the Via branch."""

    def __init__(
        self,
        wire: AgentWire,
        invite: SipRequest,
        destination: Addr,
        user: InviteUser,
        forget: Callable[[InviteClient], None],
    ) -> None:
        branch = _top_branch(invite)
        if branch is None:
            raise ValueError("INVITE without a Via branch")
        self.branch = branch
        self.wire = wire
        self.invite = invite
        self.destination = destination
        self.state: State = "calling"
        self._user = user
        self._forget = forget
        self._t1 = wire.t1
        self._ack: SipRequest | None = None
        self._timer_a: asyncio.TimerHandle | None = None
        self._timer_b: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._interval = self._t1

    @property
    def sip_call_id(self) -> str:
        return self.invite.call_id or ""

    def start(self) -> None:
        """Send the INVITE and arm Timers A (UDP only) and B."""
        loop = asyncio.get_running_loop()
        if not self._send(self.invite):
            return
        if not self.wire.reliable:
            self._timer_a = loop.call_later(self._interval, self._retransmit)
        self._timer_b = loop.call_later(64 * self._t1, self._time_out)

    def _send(self, message: SipRequest) -> bool:
        try:
            self.wire.send(message, self.destination)
        except (OSError, RuntimeError) as exc:
            logger.warning(
                "could not send %s to %s:%s: %s",
                message.method,
                *self.destination,
                exc,
                extra={"sip_call_id": self.sip_call_id},
            )
            if self.state in ("calling", "proceeding") and message is self.invite:
                self._terminate()
                self._user.transport_failed(self, exc)
            return False
        return True

    def _retransmit(self) -> None:
        self._timer_a = None
        if self.state != "calling":
            return
        self._interval *= 2
        if self._send(self.invite):
            self._timer_a = asyncio.get_running_loop().call_later(self._interval, self._retransmit)

    def _time_out(self) -> None:
        self._timer_b = None
        if self.state != "calling":
            return
        logger.info("no response to INVITE within 64*T1", extra={"sip_call_id": self.sip_call_id})
        self._terminate()
        self._user.timed_out(self)

    def give_up(self) -> None:
        """The transaction user stops waiting (no final after a CANCEL): terminate quietly."""
        self._terminate()

    def receive(self, response: SipResponse) -> None:
        """A response whose branch and CSeq method matched this transaction."""
        code = response.status_code
        if code < 200:
            if self.state in ("calling", "proceeding"):
                self.state = "proceeding"
                self._stop_timers()
                self._user.provisional(self, response)
            return
        if code < 300:
            if self.state in ("calling", "proceeding"):
                self.state = "accepted"
                self._stop_timers()
                self._linger = asyncio.get_running_loop().call_later(64 * self._t1, self._terminate)
            if self.state == "accepted":
                self._user.accepted(self, response)
            return
        if self.state in ("calling", "proceeding"):
            self.state = "completed"
            self._stop_timers()
            self._ack = self._build_ack(response)
            self._send(self._ack)
            wait = 0.0 if self.wire.reliable else TIMER_D_UDP
            self._linger = asyncio.get_running_loop().call_later(wait, self._terminate)
            self._user.rejected(self, response)
        elif self.state == "completed" and self._ack is not None:
            logger.debug("final %s retransmitted; ACK again", code, extra={"sip_call_id": self.sip_call_id})
            self._send(self._ack)

    def _build_ack(self, response: SipResponse) -> SipRequest:
        """RFC 3261 §17.1.1.3: the ACK for a non-2xx final response."""
        invite = self.invite
        ack = SipRequest(method="ACK", uri=invite.uri)
        top_via = invite.headers.get_first("via")
        if top_via:
            ack.headers.append("Via", top_via)
        for name in ("From", "Call-ID"):
            value = invite.headers.get_first(name)
            if value:
                ack.headers.set_single(name, value)
        ack.headers.set_single("To", response.headers.get_first("to") or invite.headers.get_first("to") or "")
        seq = invite.cseq.seq if invite.cseq is not None else 1
        ack.headers.set_single("CSeq", f"{seq} ACK")
        ack.headers.set_single("Max-Forwards", "70")
        for route in invite.headers.get("route"):
            ack.headers.append("Route", route)
        return ack

    def _stop_timers(self) -> None:
        for timer in (self._timer_a, self._timer_b):
            if timer is not None:
                timer.cancel()
        self._timer_a = self._timer_b = None

    def _terminate(self) -> None:
        if self.state == "terminated":
            return
        self.state = "terminated"
        self._stop_timers()
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._forget(self)

    def close(self) -> None:
        """The edge is stopping: no more timers."""
        self._terminate()
