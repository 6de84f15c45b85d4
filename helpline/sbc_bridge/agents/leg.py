"""One call to one agent contact: the INVITE, its outcome, then the dialog until someone hangs up.

The upper layer (the queue runtime) sees only :class:`AgentLeg` and :class:`DialOutcome`; SDP
crosses as bytes, the end of a confirmed call as :class:`..call.CallEnd`.

The outcome resolves exactly once. ``cancel()`` and the ring timeout resolve it at once
(``cancelled`` / ``no_answer``) and the CANCEL goes out in the background: after the first
provisional (RFC 3261 §9.1), and if a 200 crosses it, that call is ACKed and ended with a BYE.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from aiosipua.dialog import Dialog, DialogState, dialog_matches, remote_cseq_valid
from aiosipua.headers import parse_address, stringify_uri
from aiosipua.message import SipRequest, SipResponse
from aiosipua.utils import generate_branch, generate_tag

from ..call import CallEnd, EndedBy
from ..dtmf import DTMF_CONTENT_TYPES, parse_dtmf_info
from ..outbound import next_hop
from .binding import Binding
from .invite_client import InviteClient
from .wire import AgentWire

if TYPE_CHECKING:
    from .edge import AgentEdge

logger = logging.getLogger(__name__)

Addr = tuple[str, int]
OutcomeKind = Literal["answered", "busy", "rejected", "no_answer", "unreachable", "cancelled"]
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO, REFER"
_BUSY_CODES = (486, 600)
_T2 = 4.0


@dataclass(frozen=True, slots=True)
class DialOutcome:
    """How an INVITE to an agent ended: ``sip_code`` is the final answer when there was one."""

    kind: OutcomeKind
    sip_code: int | None
    sdp_answer: bytes | None
    reason: str


def quote_display(name: str) -> str:
    """A display name as an RFC 3261 quoted-string."""
    return '"{}"'.format(name.replace("\\", "\\\\").replace('"', '\\"'))


def _body_type(message: SipRequest | SipResponse) -> str:
    return (message.content_type or "").split(";", 1)[0].strip().lower()


class AgentLeg:
    """An INVITE to one registered contact, then its dialog.

    Set ``on_ended``, ``on_reoffer``, ``on_dtmf`` and ``on_refer`` before awaiting the outcome.
    Handlers run on the event loop; their exceptions are logged, never raised into the SIP stack.
    """

    def __init__(
        self,
        edge: AgentEdge,
        wire: AgentWire,
        binding: Binding,
        *,
        caller: str,
        caller_name: str | None,
        sdp_offer: bytes,
        headers: Mapping[str, str],
        ring_timeout: float,
    ) -> None:
        self.extension = binding.extension
        self.binding = binding
        self.sip_call_id = uuid.uuid4().hex  # no "@host": it would name the product (A26)
        self.on_ended: Callable[[CallEnd], None] | None = None
        self.on_reoffer: Callable[[bytes], bytes | None] | None = None
        self.on_dtmf: Callable[[str, int], None] | None = None
        self.on_refer: Callable[[str], bool] | None = None
        self.ended: CallEnd | None = None
        self._edge = edge
        self._wire = wire
        self._ring_timeout = ring_timeout
        self._local_sdp = sdp_offer
        self._outcome: asyncio.Future[DialOutcome] = asyncio.get_running_loop().create_future()
        self._state: Literal["calling", "ringing", "confirmed", "ended"] = "calling"
        self._heard = False
        self._cancel_wanted = False
        self._cancel_sent = False
        self._client: InviteClient | None = None
        self._destination: Addr | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ack: SipRequest | None = None
        self._reinvite: asyncio.Future[SipResponse | None] | None = None
        self._answer_retransmit: asyncio.Task[None] | None = None
        self._answer_cseq = 0
        self._refer_active = False
        local_uri = wire.host_uri(caller)
        self.dialog = Dialog(
            call_id=self.sip_call_id,
            local_tag=generate_tag(),
            local_uri=local_uri,
            remote_uri=wire.host_uri(binding.extension),
            remote_target=binding.contact,
            state=DialogState.EARLY,
        )
        self._invite = self._build_invite(caller_name, sdp_offer, headers)

    def __repr__(self) -> str:
        return f"AgentLeg({self.sip_call_id!r}, extension={self.extension!r}, state={self._state})"

    # --- public API ---

    @property
    def confirmed(self) -> bool:
        return self._state == "confirmed"

    async def outcome(self) -> DialOutcome:
        """How the INVITE ended (resolves once; later awaits return the same outcome)."""
        return await asyncio.shield(self._outcome)

    def cancel(self) -> None:
        """The caller left while the agent was ringing: CANCEL (idempotent; no-op once answered)."""
        if self._state in ("calling", "ringing"):
            self._resolve("cancelled", None, None, "cancelled by us")
            self._want_cancel()

    def hangup(self) -> None:
        """End the call: BYE once confirmed, CANCEL while still ringing."""
        if self._state in ("calling", "ringing"):
            self.cancel()
        elif self._state == "confirmed":
            self._send_bye()
            self._end("local", None, "hangup")

    async def reinvite(self, sdp: bytes) -> bytes | None:
        """Send our re-offer in the dialog; the agent's SDP answer, or None when it refused."""
        if self._state != "confirmed" or self._reinvite is not None:
            return None
        request = self._in_dialog("INVITE")
        request.body = sdp
        request.headers.set_single("Content-Type", "application/sdp")
        self._reinvite = asyncio.get_running_loop().create_future()
        try:
            destination = await self._next_hop()
            client = InviteClient(
                self._wire, request, destination, _ReinviteUser(self), self._edge.forget_invite
            )
            self._edge.track_invite(client)
            client.start()
            async with asyncio.timeout(64 * self._wire.t1 + 1.0):
                response = await self._reinvite
        except (OSError, RuntimeError, TimeoutError) as exc:
            logger.warning("re-INVITE failed: %s", exc, extra=self._log_extra())
            return None
        finally:
            self._reinvite = None
        if response is None or not 200 <= response.status_code < 300:
            return None
        self._local_sdp = sdp
        return response.body or None

    def notify_transfer(self, status: int) -> None:
        """Report the final status of a transfer the agent asked for with REFER (NOTIFY, terminated)."""
        if not self._refer_active or self._state != "confirmed":
            logger.info("notify_transfer(%s) without an accepted REFER", status, extra=self._log_extra())
            return
        self._refer_active = status < 200
        self._send_notify(status, final=status >= 200)

    # --- starting ---

    def _build_invite(self, caller_name: str | None, sdp: bytes, headers: Mapping[str, str]) -> SipRequest:
        dialog, wire = self.dialog, self._wire
        invite = SipRequest(method="INVITE", uri=self.binding.contact)
        invite.headers.append("Via", wire.via())
        display = f"{quote_display(caller_name)} " if caller_name else ""
        invite.headers.set_single("From", f"{display}<{dialog.local_uri}>;tag={dialog.local_tag}")
        invite.headers.set_single("To", f"<{dialog.remote_uri}>")
        invite.headers.set_single("Call-ID", dialog.call_id)
        invite.headers.set_single("CSeq", f"{dialog.next_cseq()} INVITE")
        invite.headers.set_single("Max-Forwards", str(self._edge.settings.max_forwards))
        invite.headers.set_single("Contact", wire.contact_value())
        invite.headers.set_single("P-Asserted-Identity", f"{display}<{dialog.local_uri}>")
        invite.headers.set_single("Allow", ALLOW)
        if wire.user_agent:
            invite.headers.set_single("User-Agent", wire.user_agent)
        for name, value in headers.items():
            invite.headers.set_single(name, value)
        invite.body = sdp
        invite.headers.set_single("Content-Type", "application/sdp")
        return invite

    def start(self) -> None:
        self._spawn(self._start())
        self._timers.append(asyncio.get_running_loop().call_later(self._ring_timeout, self._rang_out))

    async def _start(self) -> None:
        try:
            self._destination = await self._wire.reach(self.binding.source, self.binding.contact)
        except OSError as exc:
            logger.info("agent %s unreachable: %s", self.extension, exc, extra=self._log_extra())
            self._resolve("unreachable", None, None, f"no connection: {exc}")
            self._finish()
            return
        if self._outcome.done():  # cancelled before the INVITE left: nothing to undo on the wire
            self._finish()
            return
        client = InviteClient(self._wire, self._invite, self._destination, self, self._edge.forget_invite)
        self._client = client
        self._edge.track_invite(client)
        client.start()

    # --- InviteUser (the initial INVITE) ---

    def provisional(self, client: InviteClient, response: SipResponse) -> None:
        self._heard = True
        if self._state == "calling":
            self._state = "ringing"
        if self._cancel_wanted and not self._cancel_sent:
            self._send_cancel()

    def accepted(self, client: InviteClient, response: SipResponse) -> None:
        if self._ack is not None:
            self._resend(self._ack)  # a retransmitted 2xx: our ACK was lost
            return
        self._heard = True
        to_addr = response.to_addr
        self.dialog.remote_tag = (to_addr.tag if to_addr else None) or ""
        contacts = response.contact
        if contacts:
            self.dialog.remote_target = stringify_uri(contacts[0].uri)
        self.dialog.route_set = list(reversed(response.headers.get("record-route")))
        self.dialog.confirm()
        seq = response.cseq.seq if response.cseq is not None else 1
        self._ack = self._ack_for(seq)
        self._spawn(self._send_in_dialog_once(self._ack))
        if self._state == "ended" or self._outcome.done():
            logger.info("200 OK crossed our CANCEL: ACK and BYE", extra=self._log_extra())
            self._state = "confirmed"
            self._send_bye()
            self._state = "ended"
            self._finish()
            return
        self._state = "confirmed"
        self._cancel_timers()
        body = response.body if _body_type(response) == "application/sdp" and response.body else None
        self._resolve("answered", response.status_code, body, "answered")

    def rejected(self, client: InviteClient, response: SipResponse) -> None:
        code, reason = response.status_code, response.reason_phrase
        if code in _BUSY_CODES:
            self._resolve("busy", code, None, f"{code} {reason}")
        else:
            self._resolve("rejected", code, None, f"{code} {reason}")
        self._finish()

    def timed_out(self, client: InviteClient) -> None:
        self._resolve("unreachable", None, None, "no response to INVITE (Timer B)")
        self._finish()

    def transport_failed(self, client: InviteClient, error: Exception) -> None:
        self._resolve("unreachable", None, None, f"transport error: {error}")
        self._finish()

    # --- ringing control ---

    def _rang_out(self) -> None:
        if self._state not in ("calling", "ringing"):
            return
        if self._heard:
            self._resolve("no_answer", None, None, f"no answer within {self._ring_timeout:g}s")
        else:
            self._resolve("unreachable", None, None, f"no response within {self._ring_timeout:g}s")
        self._want_cancel()

    def _want_cancel(self) -> None:
        self._cancel_wanted = True
        client = self._client
        if client is not None and client.state == "proceeding" and not self._cancel_sent:
            self._send_cancel()
        elif client is None or client.state == "calling":
            logger.debug("CANCEL waits for a provisional response", extra=self._log_extra())

    def _send_cancel(self) -> None:
        """RFC 3261 §9.1: CANCEL with the INVITE's Request-URI, top Via, From, To, Call-ID, Route."""
        self._cancel_sent = True
        invite = self._invite
        cancel = SipRequest(method="CANCEL", uri=invite.uri)
        top_via = invite.headers.get_first("via")
        if top_via:
            cancel.headers.append("Via", top_via)
        for name in ("From", "To", "Call-ID"):
            value = invite.headers.get_first(name)
            if value:
                cancel.headers.set_single(name, value)
        seq = invite.cseq.seq if invite.cseq is not None else 1
        cancel.headers.set_single("CSeq", f"{seq} CANCEL")
        cancel.headers.set_single("Max-Forwards", "70")
        for route in invite.headers.get("route"):
            cancel.headers.append("Route", route)
        self._spawn(self._cancel_transaction(cancel))

    async def _cancel_transaction(self, cancel: SipRequest) -> None:
        if self._destination is None:
            return
        response = await self._send_logged(cancel, self._destination)
        if response is not None and response.status_code >= 300:
            logger.info("CANCEL answered %s", response.status_code, extra=self._log_extra())
        # RFC 3261 §9.1: without a final response to the INVITE 64*T1 after the CANCEL, give up
        await asyncio.sleep(64 * self._wire.t1 if response is None else 32 * self._wire.t1)
        client = self._client
        if client is not None and client.state == "proceeding":
            logger.warning("no final answer to a cancelled INVITE; giving up", extra=self._log_extra())
            client.give_up()
            self._finish()

    # --- requests from the agent inside the dialog ---

    def handle_request(self, request: SipRequest, addr: Addr) -> None:
        """An in-dialog request for this leg (Call-ID matched, source checked by the edge)."""
        method = request.method.upper()
        if method == "ACK":
            if dialog_matches(self.dialog, request):
                self._acked(request)
            return
        if not dialog_matches(self.dialog, request) or self._state != "confirmed":
            self._wire.reply(request, 481, "Call/Transaction Does Not Exist")
            return
        if not remote_cseq_valid(self.dialog, request):
            self._wire.reply(request, 500, "Server Internal Error", (("Retry-After", "1"),))
            return
        handler = {
            "BYE": self._on_bye,
            "INVITE": self._on_reinvite,
            "UPDATE": self._on_update,
            "INFO": self._on_info,
            "REFER": self._on_refer,
            "OPTIONS": self._on_options,
        }.get(method)
        if handler is None:
            self._wire.reply(request, 405, "Method Not Allowed", (("Allow", ALLOW),))
            return
        handler(request)

    def _on_bye(self, request: SipRequest) -> None:
        self._wire.reply(request, 200, "OK")
        self.dialog.terminate()
        self._end("remote_bye", None, "BYE from agent")

    def _on_options(self, request: SipRequest) -> None:
        self._wire.reply(request, 200, "OK", (("Allow", ALLOW), ("Accept", "application/sdp")))

    def _on_reinvite(self, request: SipRequest) -> None:
        if self._reinvite is not None or self._answer_retransmit is not None:
            self._wire.reply(request, 491, "Request Pending", (("Retry-After", "1"),))
            return
        self._update_target(request)
        if _body_type(request) == "application/sdp" and request.body:
            answer = self._reoffer(request.body)
            if answer is None:
                self._wire.reply(request, 488, "Not Acceptable Here")
                return
            self._local_sdp = answer
        response = self._answer(request, self._local_sdp)
        if response is None:
            return
        self._answer_cseq = request.cseq.seq if request.cseq is not None else 0
        self._answer_retransmit = asyncio.get_running_loop().create_task(
            self._retransmit_answer(request, response)
        )
        self._tasks.add(self._answer_retransmit)
        self._answer_retransmit.add_done_callback(self._tasks.discard)

    def _on_update(self, request: SipRequest) -> None:
        if _body_type(request) == "application/sdp" and request.body:
            answer = self._reoffer(request.body)
            if answer is None:
                self._wire.reply(request, 488, "Not Acceptable Here")
                return
            self._local_sdp = answer
            self._answer(request, answer)
            return
        self._wire.reply(request, 200, "OK")

    def _answer(self, request: SipRequest, sdp: bytes) -> SipResponse | None:
        response = self._wire.response(request, 200, "OK", to_tag=self.dialog.local_tag)
        response.headers.set_single("Contact", self._wire.contact_value())
        response.headers.set_single("Allow", ALLOW)
        response.body = sdp
        response.headers.set_single("Content-Type", "application/sdp")
        self._wire.send_reply(response)
        return response

    async def _retransmit_answer(self, request: SipRequest, response: SipResponse) -> None:
        """RFC 3261 §13.3.1.4: our 2xx to a re-INVITE is resent until the ACK; none -> end the call."""
        t1 = self._wire.t1
        interval, waited = t1, 0.0
        try:
            while waited < 64 * t1:
                await asyncio.sleep(interval)
                waited += interval
                if not self._wire.reliable:
                    self._wire.send_reply(response)
                interval = min(interval * 2, _T2)
        finally:
            self._answer_retransmit = None
        logger.warning("no ACK for our 200 to a re-INVITE; ending the call", extra=self._log_extra())
        if self._state == "confirmed":
            self._send_bye()
            self._end("ack_timeout", None, "no ACK for 200 OK to re-INVITE")

    def _acked(self, request: SipRequest) -> None:
        task = self._answer_retransmit
        seq = request.cseq.seq if request.cseq is not None else -1
        if task is not None and seq == self._answer_cseq:
            task.cancel()
            self._answer_retransmit = None

    def _on_info(self, request: SipRequest) -> None:
        if not request.body:
            self._wire.reply(request, 200, "OK")
            return
        kind = _body_type(request)
        if kind not in DTMF_CONTENT_TYPES:
            self._wire.reply(
                request, 415, "Unsupported Media Type", (("Accept", ", ".join(DTMF_CONTENT_TYPES)),)
            )
            return
        parsed = parse_dtmf_info(kind, request.text)
        if parsed is None:
            self._wire.reply(request, 400, "Bad DTMF Body")
            return
        self._wire.reply(request, 200, "OK")
        self._call_handler("on_dtmf", self.on_dtmf, *parsed)

    def _on_refer(self, request: SipRequest) -> None:
        raw = request.headers.get_first("refer-to")
        if not raw:
            self._wire.reply(request, 400, "Missing Refer-To")
            return
        target = stringify_uri(parse_address(raw).uri)
        accepted = self._call_handler("on_refer", self.on_refer, target) is True
        if not accepted:
            self._wire.reply(request, 403, "Forbidden")
            return
        self._wire.reply(request, 202, "Accepted")
        self._refer_active = True
        self._send_notify(100, final=False)

    def _send_notify(self, status: int, *, final: bool) -> None:
        reasons = {100: "Trying", 180: "Ringing", 200: "OK", 403: "Forbidden", 404: "Not Found",
                   480: "Temporarily Unavailable", 486: "Busy Here", 487: "Request Terminated",
                   503: "Service Unavailable", 603: "Decline"}
        notify = self._in_dialog("NOTIFY")
        notify.headers.set_single("Event", "refer")
        notify.headers.set_single(
            "Subscription-State", "terminated;reason=noresource" if final else "active;expires=60"
        )
        notify.headers.set_single("Content-Type", "message/sipfrag;version=2.0")
        notify.text = f"SIP/2.0 {status} {reasons.get(status, 'Unknown')}\r\n"
        self._spawn(self._send_in_dialog(notify))

    def _update_target(self, request: SipRequest) -> None:
        contacts = request.contact
        if contacts and contacts[0].uri.host:
            self.dialog.remote_target = stringify_uri(contacts[0].uri)

    def _reoffer(self, offer: bytes) -> bytes | None:
        answer = self._call_handler("on_reoffer", self.on_reoffer, offer)
        return answer if isinstance(answer, bytes) else None

    # --- requests we send inside the dialog ---

    def _in_dialog(self, method: str) -> SipRequest:
        wire = self._wire
        host, port = wire.advertised
        request = self.dialog.create_request(
            method, via_host=host, via_port=port, via_transport=wire.name.upper()
        )
        request.headers.set_single("Max-Forwards", str(self._edge.settings.max_forwards))
        if method not in ("BYE", "ACK"):
            request.headers.set_single("Contact", wire.contact_value())
        if wire.user_agent:
            request.headers.set_single("User-Agent", wire.user_agent)
        return request

    def _ack_for(self, seq: int) -> SipRequest:
        """RFC 3261 §13.2.2.4: the ACK for a 2xx is its own transaction (new branch), same CSeq number."""
        dialog = self.dialog
        ack = SipRequest(method="ACK", uri=dialog.remote_target or dialog.remote_uri)
        ack.headers.append("Via", self._wire.via(generate_branch()))
        ack.headers.set_single("From", f"<{dialog.local_uri}>;tag={dialog.local_tag}")
        ack.headers.set_single("To", f"<{dialog.remote_uri}>;tag={dialog.remote_tag}")
        ack.headers.set_single("Call-ID", dialog.call_id)
        ack.headers.set_single("CSeq", f"{seq} ACK")
        ack.headers.set_single("Max-Forwards", "70")
        for route in dialog.route_set:
            ack.headers.append("Route", route)
        return ack

    async def _next_hop(self) -> Addr:
        if self.dialog.route_set:
            return await next_hop(self.dialog, self._wire.transport, self.binding.source)
        return await self._wire.reach(self.binding.source, self.dialog.remote_target or self.binding.contact)

    def _resend(self, message: SipRequest) -> None:
        self._spawn(self._send_in_dialog_once(message))

    async def _send_in_dialog_once(self, message: SipRequest) -> None:
        try:
            self._wire.send(message, await self._next_hop())
        except (OSError, RuntimeError) as exc:
            logger.warning("%s could not be sent: %s", message.method, exc, extra=self._log_extra())

    async def _send_in_dialog(self, request: SipRequest) -> SipResponse | None:
        try:
            destination = await self._next_hop()
        except OSError as exc:
            logger.warning("%s could not be sent: %s", request.method, exc, extra=self._log_extra())
            return None
        return await self._send_logged(request, destination)

    async def _send_logged(self, request: SipRequest, destination: Addr) -> SipResponse | None:
        try:
            response = await self._wire.requests.send(request, destination)
        except (OSError, RuntimeError) as exc:
            logger.warning("%s could not be sent: %s", request.method, exc, extra=self._log_extra())
            return None
        if response is None:
            logger.warning("%s got no answer", request.method, extra=self._log_extra())
        return response

    def _send_bye(self) -> None:
        if self.dialog.state != DialogState.CONFIRMED:
            return
        bye = self._in_dialog("BYE")
        self.dialog.terminate()
        self._edge.keep_task(self._send_in_dialog(bye))

    # --- ending ---

    def _resolve(self, kind: OutcomeKind, code: int | None, sdp: bytes | None, reason: str) -> None:
        if not self._outcome.done():
            logger.info("dial %s -> %s (%s)", self.extension, kind, reason, extra=self._log_extra())
            self._outcome.set_result(DialOutcome(kind, code, sdp, reason))

    def _end(self, by: EndedBy, sip_code: int | None, reason: str) -> None:
        if self.ended is not None:
            return
        self.ended = CallEnd(by, sip_code, reason)
        self._finish()
        self._call_handler("on_ended", self.on_ended, self.ended)

    def _finish(self) -> None:
        """No more SIP for this leg from the agent's side: drop timers and leave the edge's table."""
        self._state = "ended"
        self._cancel_timers()
        if self._answer_retransmit is not None:
            self._answer_retransmit.cancel()
            self._answer_retransmit = None
        if self._reinvite is not None and not self._reinvite.done():
            self._reinvite.set_result(None)
        self._edge.forget_leg(self)

    def _cancel_timers(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    def shutdown(self) -> None:
        """The edge is stopping: BYE a confirmed call, CANCEL a ringing one."""
        if self._state == "confirmed":
            self._send_bye()
            self._end("local", None, "edge stopping")
        elif self._state in ("calling", "ringing"):
            self._resolve("cancelled", None, None, "edge stopping")
            if self._client is not None and self._client.state == "proceeding":
                self._send_cancel()
            self._finish()

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._cancel_timers()

    # --- helpers ---

    def reinvite_answered(self, response: SipResponse | None) -> None:
        if self._reinvite is not None and not self._reinvite.done():
            self._reinvite.set_result(response)

    def ack_reinvite(self, response: SipResponse) -> None:
        seq = response.cseq.seq if response.cseq is not None else self.dialog.local_cseq
        self._resend(self._ack_for(seq))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _call_handler(self, name: str, handler: Callable[..., Any] | None, *args: Any) -> Any:
        if handler is None:
            logger.info("%s has no subscriber", name, extra=self._log_extra())
            return None
        try:
            return handler(*args)
        except Exception:
            logger.exception("%s handler failed", name, extra=self._log_extra())
            return None

    def _log_extra(self) -> dict[str, str]:
        return {"sip_call_id": self.sip_call_id}


class _ReinviteUser:
    """Transaction user for our re-INVITE: ACK a 2xx, hand every final answer to the waiting leg."""

    def __init__(self, leg: AgentLeg) -> None:
        self._leg = leg
        self._acked = False

    def provisional(self, client: InviteClient, response: SipResponse) -> None:
        return None

    def accepted(self, client: InviteClient, response: SipResponse) -> None:
        self._leg.ack_reinvite(response)
        if not self._acked:
            self._acked = True
            self._leg.reinvite_answered(response)

    def rejected(self, client: InviteClient, response: SipResponse) -> None:
        self._leg.reinvite_answered(response)

    def timed_out(self, client: InviteClient) -> None:
        self._leg.reinvite_answered(None)

    def transport_failed(self, client: InviteClient, error: Exception) -> None:
        self._leg.reinvite_answered(None)
