"""aiosipua's SipUAS extended into a trunk-facing edge.

Gaps in aiosipua's ``SipUAS`` fixed here (each is exercised by tests/sbc_bridge):

- Every request is screened first: the edge guard (scanner User-Agents, size caps, rate limits; a
  drop is remembered so retransmissions stay unanswered), then the source ACL (drop or 403 before
  anything else is looked at),
  validation with the offending header named in the 400 and the security event, Max-Forwards 0 → 483.
- A retransmitted INVITE is answered from the transaction's last response (see ReplyMemory in
  :mod:`.transport`); aiosipua created a second call for it. A same-Call-ID INVITE that is not a
  retransmission gets 482 instead of replacing the live call.
- CANCEL after the 2xx no longer tears the answered call down (RFC 3261 §9.2).
- re-INVITE and UPDATE offers are answered through the upper layer (200 with its SDP, or 488 that
  leaves the dialog intact; aiosipua's reject would terminate it).
- INFO is handled (DTMF via application/dtmf-relay and application/dtmf; 415 for other bodies).
- Unknown methods get 501, known-but-unsupported ones 405, both with Allow.
- Session timers: the INVITE's Min-SE is honoured, a peer that supports timers refreshes, a peer that
  does not leaves the refresh to us; Require with an unsupported extension gets 420.
- Responses to our own in-dialog requests reach their client transaction.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Protocol

from aiosipua.dialog import DialogState, create_dialog_from_request
from aiosipua.message import SipRequest, SipResponse
from aiosipua.session_timer import SessionTimer, parse_session_expires
from aiosipua.transaction import TransactionState
from aiosipua.uas import SipUAS
from aiosipua.uas_requests import handle_ack, handle_bye, handle_cancel, handle_update, session_refreshed
from aiosipua.utils import format_addr

from .config import SipSettings, TrunkConfig
from .dtmf import DTMF_CONTENT_TYPES, parse_dtmf_info
from .guard import Verdict
from .leg import ALLOW, SUPPORTED, EdgeCall, SipLeg
from .outbound import InDialogRequests
from .responses import copy_transaction_headers
from .transport import EdgeTcpTransport, EdgeUdpTransport
from .validation import Problem, max_forwards_exhausted, validate_request

logger = logging.getLogger(__name__)

Addr = tuple[str, int]
_KNOWN_UNSUPPORTED = {"REGISTER", "SUBSCRIBE", "PUBLISH", "MESSAGE", "PRACK", "REFER"}


class EdgeHooks(Protocol):
    """The decisions the UAS leaves to the edge (implemented by TrunkBridge)."""

    def trunk_for(self, addr: Addr) -> TrunkConfig | None: ...
    def stranger(self, uas: EdgeUas, request: SipRequest, addr: Addr) -> None: ...
    def malformed(self, uas: EdgeUas, request: SipRequest, addr: Addr, problem: Problem) -> None: ...
    def too_many_hops(self, uas: EdgeUas, request: SipRequest, addr: Addr, trunk: TrunkConfig) -> None: ...
    def foreign_in_dialog(
        self, uas: EdgeUas, request: SipRequest, addr: Addr, trunk: TrunkConfig
    ) -> None: ...
    def new_invite(self, uas: EdgeUas, request: SipRequest, addr: Addr, trunk: TrunkConfig) -> None: ...


def _body_type(request: SipRequest) -> str:
    return (request.content_type or "").split(";", 1)[0].strip().lower()


class EdgeUas(SipUAS):
    """One listener (UDP or TCP) of the trunk edge."""

    def __init__(
        self, transport: EdgeUdpTransport | EdgeTcpTransport, settings: SipSettings, hooks: EdgeHooks
    ) -> None:
        super().__init__(
            transport,
            user_agent=settings.user_agent,
            retransmit_2xx=True,
            session_expires=settings.session_expires,
            min_se=settings.min_se,
        )
        self.edge_transport = transport
        self.settings = settings
        self.hooks = hooks
        self.requests = InDialogRequests(transport, settings.timer_t1)
        self._handlers["INFO"] = self._handle_info
        self._handlers["UPDATE"] = self._handle_update
        self._handlers["CANCEL"] = self._handle_cancel
        self._handlers["ACK"] = self._handle_ack
        self._handlers["BYE"] = self._handle_bye
        for method in ("PRACK", "REFER"):
            self._handlers.pop(method, None)
        self.on_transfer_progress = self._transfer_progress

    @property
    def name(self) -> str:
        return self.edge_transport.name

    def signalling_addr(self) -> Addr:
        return self.advertised_addr or self.transport.local_addr

    def contact_value(self) -> str:
        suffix = "" if self.name == "udp" else f";transport={self.name}"  # tcp or tls
        return f"<sip:{format_addr(*self.signalling_addr())}{suffix}>"

    # --- dispatch ---

    def _on_message(self, msg: SipRequest | SipResponse, addr: Addr) -> None:
        if isinstance(msg, SipResponse):
            if not self.requests.on_response(msg):
                logger.debug("response %s matches no request of ours", msg.status_code)
            return
        self._handle_request(msg, addr)

    def _handle_request(self, request: SipRequest, addr: Addr) -> None:
        guard = self.edge_transport.guard
        if guard is not None:
            verdict = guard.screen(self.edge_transport.listener, self.name, request, addr)
            if verdict.action != "pass":
                self._screened_out(request, verdict)
                return
        trunk = self.hooks.trunk_for(addr)
        if trunk is None:
            self.hooks.stranger(self, request, addr)
            return
        problem = validate_request(request, stream=self.edge_transport.reliable)
        if problem is not None:
            self.hooks.malformed(self, request, addr, problem)
            return
        method = request.method.upper()
        if not self._from_dialog_trunk(request, trunk):
            self.hooks.foreign_in_dialog(self, request, addr, trunk)
            return
        if method not in ("ACK", "CANCEL") and max_forwards_exhausted(request):
            self.hooks.too_many_hops(self, request, addr, trunk)
            return
        handler = self._handlers.get(method)
        if handler is None:
            known = method in _KNOWN_UNSUPPORTED
            code, reason = (405, "Method Not Allowed") if known else (501, "Not Implemented")
            self.send_error(request, code, reason, headers={"Allow": ALLOW})
            return
        if method == "INVITE":
            self._handle_invite_from(request, addr, trunk)
        else:
            handler(request, addr)

    def _from_dialog_trunk(self, request: SipRequest, trunk: TrunkConfig) -> bool:
        """Whether a request for a live call comes from the trunk that placed it (A23).

        Another trunk's address (let alone a stranger's, dropped before) cannot BYE, CANCEL or
        re-INVITE someone else's call even with the right Call-ID and tags. Any source of the same
        trunk may: carriers fail over between their signalling addresses mid-call.
        """
        call = self._calls.get(request.call_id or "")
        if not isinstance(call, EdgeCall):
            return True
        owner = self.hooks.trunk_for(call.source_addr)
        return owner is not None and owner.name == trunk.name

    def _screened_out(self, request: SipRequest, verdict: Verdict) -> None:
        """The guard refused ``request``: answer it as told, or drop it (and its retransmissions)."""
        if verdict.action == "reject" and request.method.upper() != "ACK":
            self.send_error(request, verdict.code, verdict.reason, headers=dict(verdict.headers))
        elif verdict.remembered:
            self.edge_transport.replies.drop(request)

    def send_error(
        self,
        request: SipRequest,
        code: int,
        reason: str,
        *,
        warning: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer a request outside any call, with an optional Warning naming the problem."""
        extra = dict(headers or {})
        if warning:
            extra["Warning"] = '399 - "{}"'.format(warning.replace('"', "'"))
        if request.headers.get("via"):
            self._send_error(request, code, reason, extra_headers=extra)
            return
        if self.edge_transport.reliable:
            logger.info("answering a Via-less request on its TCP connection")
        else:
            logger.info("cannot route a reply to a Via-less request over UDP; dropped")

    def _send_error(
        self,
        request: SipRequest,
        status_code: int,
        reason: str,
        *,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        """aiosipua's version appends a second tag to a To that already has one; this one does not."""
        response = SipResponse(status_code=status_code, reason_phrase=reason)
        copy_transaction_headers(request, response)
        for name, value in (extra_headers or {}).items():
            response.headers.set_single(name, value)
        if self.user_agent:
            response.headers.set_single("Server", self.user_agent)
        self.transport.send_reply(response)

    def send_error_to(
        self,
        request: SipRequest,
        addr: Addr,
        code: int,
        reason: str,
        warning: str,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Like :meth:`send_error`, but over TCP a request without Via is answered on its connection."""
        if request.headers.get("via") or not self.edge_transport.reliable:
            self.send_error(request, code, reason, warning=warning, headers=headers)
            return
        response = SipResponse(status_code=code, reason_phrase=reason)
        for name in ("From", "To", "Call-ID", "CSeq"):
            value = request.headers.get_first(name)
            if value:
                response.headers.set_single(name, value)
        for name, value in (headers or {}).items():
            response.headers.set_single(name, value)
        response.headers.set_single("Warning", '399 - "{}"'.format(warning.replace('"', "'")))
        self.transport.send(response, addr)

    # --- INVITE ---

    def _handle_invite_from(self, request: SipRequest, addr: Addr, trunk: TrunkConfig) -> None:
        call_id = request.call_id or ""
        to_addr = request.to_addr
        existing = self._calls.get(call_id)
        if existing is not None:
            if existing.dialog.state == DialogState.CONFIRMED and to_addr is not None and to_addr.tag:
                if isinstance(existing, EdgeCall) and self._validate_in_dialog(existing.dialog, request):
                    self._reinvite(existing, request)
            else:
                self.send_error(request, 482, "Loop Detected")
            return
        if to_addr is not None and to_addr.tag:
            self.send_error(request, 481, "Call/Transaction Does Not Exist")
            return
        self.hooks.new_invite(self, request, addr, trunk)

    def create_call(self, request: SipRequest, addr: Addr) -> SipLeg | None:
        """Start the INVITE server side of an admitted call; None when it was refused (420/422)."""
        unsupported = [
            token.strip()
            for token in request.headers.get("require")
            if token.strip() and token.strip().lower() != "timer"
        ]
        if unsupported:
            self.send_error(request, 420, "Bad Extension", headers={"Unsupported": ", ".join(unsupported)})
            return None
        interval, refresher_us = self._negotiate_session(request)
        if interval == -1:
            return None
        dialog = create_dialog_from_request(request)
        try:
            self.transactions.create_server(request).state = TransactionState.PROCEEDING
        except ValueError:
            logger.warning("INVITE without Via branch; CANCEL cannot match it")
        body = request.body if _body_type(request) == "application/sdp" else None
        call = EdgeCall(
            dialog=dialog,
            invite=request,
            transport=self.transport,
            source_addr=addr,
            user_agent=self.user_agent,
            advertised_addr=self.advertised_addr,
            retransmit_2xx=True,
            session_interval=interval,
            session_refresher_us=refresher_us,
            on_ack_timeout=self._dispatch_ack_timeout,
            t1=self.settings.timer_t1,
            contact_value=self.contact_value(),
        )
        leg = SipLeg(self, call)
        call.leg = leg
        leg.offer = body
        self._calls[call.call_id] = call
        call.trying()
        return leg

    def _negotiate_session(self, request: SipRequest) -> tuple[int | None, bool]:
        """RFC 4028 interval and whether we refresh; interval -1 after answering 422.

        A peer that names the refresher gets its choice; a peer that supports timers but does not
        choose refreshes itself (we watch); a peer without timer support leaves the refresh to us
        (RFC 4028 §9).
        """
        if self.session_expires is None:
            return None, True
        min_se_raw = request.get_header("min-se")
        their_min = parse_session_expires(min_se_raw)[0] if min_se_raw else 0
        raw = request.get_header("session-expires") or request.get_header("x")
        interval, refresher = parse_session_expires(raw) if raw else (0, None)
        if 0 < interval < self.min_se:
            self.send_error(request, 422, "Session Interval Too Small", headers={"Min-SE": str(self.min_se)})
            return -1, True
        if interval <= 0:
            interval = max(self.session_expires, their_min, self.min_se)
        if refresher in ("uac", "uas"):
            return interval, refresher == "uas"
        peer_supports_timer = any(t.strip().lower() == "timer" for t in request.headers.get("supported"))
        return interval, not peer_supports_timer

    def _reinvite(self, call: EdgeCall, request: SipRequest) -> None:
        leg = call.leg
        if leg is None or leg.ended:
            self.send_error(request, 481, "Call/Transaction Does Not Exist")
            return
        call.invite = request
        session_refreshed(self, call.call_id, call)
        if _body_type(request) == "application/sdp" and request.body:
            answer = leg.reoffer(request.body)
            if answer is None:
                response = call.dialog.create_response(request, 488, "Not Acceptable Here")
                self.transport.send_reply(response)
                return
            leg.send_reinvite_answer(answer)
            return
        leg.send_reinvite_answer(leg.local_sdp)

    # --- in-dialog requests ---

    def _in_dialog_leg(self, request: SipRequest) -> SipLeg | None:
        call = self._calls.get(request.call_id or "")
        if not isinstance(call, EdgeCall) or call.leg is None:
            self.send_error(request, 481, "Call/Transaction Does Not Exist")
            return None
        if not self._validate_in_dialog(call.dialog, request):
            return None
        return call.leg

    def _reply_in_dialog(self, leg: SipLeg, request: SipRequest, code: int, reason: str) -> SipResponse:
        response = leg.call.dialog.create_response(request, code, reason)
        self.transport.send_reply(response)
        return response

    def _handle_info(self, request: SipRequest, addr: Addr) -> None:
        leg = self._in_dialog_leg(request)
        if leg is None:
            return
        if not request.body:
            self._reply_in_dialog(leg, request, 200, "OK")
            return
        kind = _body_type(request)
        if kind not in DTMF_CONTENT_TYPES:
            response = leg.call.dialog.create_response(request, 415, "Unsupported Media Type")
            response.headers.set_single("Accept", ", ".join(DTMF_CONTENT_TYPES))
            self.transport.send_reply(response)
            return
        parsed = parse_dtmf_info(kind, request.text)
        if parsed is None:
            self._reply_in_dialog(leg, request, 400, "Bad DTMF Body")
            return
        self._reply_in_dialog(leg, request, 200, "OK")
        leg.dtmf(*parsed)

    def _handle_update(self, request: SipRequest, addr: Addr) -> None:
        if not (request.body and _body_type(request) == "application/sdp"):
            handle_update(self, request, addr)
            return
        leg = self._in_dialog_leg(request)
        if leg is None:
            return
        answer = leg.reoffer(request.body)
        if answer is None:
            self._reply_in_dialog(leg, request, 488, "Not Acceptable Here")
            return
        response = leg.call.dialog.create_response(request, 200, "OK")
        response.body = answer
        response.headers.set_single("Content-Type", "application/sdp")
        self.transport.send_reply(response)
        session_refreshed(self, leg.call.call_id, leg.call)

    def _handle_cancel(self, request: SipRequest, addr: Addr) -> None:
        vias = request.via
        branch = vias[0].branch if vias else None
        txn = self.transactions.get_server(branch, "INVITE") if branch else None
        call = self._calls.get(txn.request.call_id or "") if txn is not None and txn.request else None
        if isinstance(call, EdgeCall) and (call._answered or call.dialog.state != DialogState.EARLY):
            # RFC 3261 §9.2: once the INVITE has a final response, CANCEL changes nothing
            self._reply_in_dialog_raw(call, request)
            return
        handle_cancel(self, request, addr)
        if isinstance(call, EdgeCall) and call.leg is not None:
            self.forget_later(call)
            call.leg.cancelled()

    def _reply_in_dialog_raw(self, call: EdgeCall, request: SipRequest) -> None:
        self.transport.send_reply(call.dialog.create_response(request, 200, "OK"))

    def _handle_ack(self, request: SipRequest, addr: Addr) -> None:
        call = self._calls.get(request.call_id or "")
        handle_ack(self, request, addr)
        if isinstance(call, EdgeCall) and call.leg is not None and call.dialog.state == DialogState.CONFIRMED:
            self.edge_transport.replies.acknowledged(call.invite)
            call.leg.acked()

    def _handle_bye(self, request: SipRequest, addr: Addr) -> None:
        call = self._calls.get(request.call_id or "")
        handle_bye(self, request, addr)
        if (
            isinstance(call, EdgeCall)
            and call.leg is not None
            and call.dialog.state == DialogState.TERMINATED
            and request.call_id not in self._calls
        ):
            call.leg.remote_bye()
            self.forget(call)

    def _handle_options(self, request: SipRequest, addr: Addr) -> None:
        response = SipResponse(status_code=200, reason_phrase="OK")
        copy_transaction_headers(request, response)
        response.headers.set_single("Allow", ALLOW)
        response.headers.set_single("Accept", "application/sdp")
        response.headers.set_single("Supported", SUPPORTED)
        self.transport.send_reply(response)

    def _transfer_progress(self, call_id: str, status: int, reason: str) -> None:
        call = self._calls.get(call_id)
        if isinstance(call, EdgeCall) and call.leg is not None:
            call.leg.transfer_progress(status)

    # --- timers ---

    def _start_session_timer(self, call: object) -> None:
        if not isinstance(call, EdgeCall) or not call.session_interval or call._session_timer is not None:
            return
        leg = call.leg
        if leg is None:
            return
        call._session_timer = SessionTimer(
            call.session_interval,
            we_refresh=call.session_refresher_us,
            refresh=leg.refresh_session,
            expire=partial(self._dispatch_session_expired, call),
        )
        call._session_timer.start()

    def _dispatch_session_expired(self, call: object) -> None:
        if isinstance(call, EdgeCall) and call.leg is not None:
            logger.warning("session expired without refresh", extra={"sip_call_id": call.call_id})
            leg = call.leg
            self.forget(call)
            leg.session_expired()

    def _dispatch_ack_timeout(self, call: object) -> None:
        if isinstance(call, EdgeCall) and call.leg is not None:
            logger.warning("no ACK for our 200 OK; ending the call", extra={"sip_call_id": call.call_id})
            leg = call.leg
            self.forget(call)
            call.dialog.state = DialogState.CONFIRMED  # aiosipua terminated it; the BYE still goes out
            leg.ack_timed_out()

    # --- bookkeeping ---

    def forget(self, call: EdgeCall) -> None:
        """The call leaves the edge: no request can reach its leg any more.

        Unlinking ``call.leg`` breaks the EdgeCall <-> SipLeg cycle, so the pair is freed by reference
        counting once its last task ends instead of waiting for a full cyclic GC pass.
        """
        if self._calls.get(call.call_id) is call:
            del self._calls[call.call_id]
        self._remove_invite_transaction(call.invite)
        call.leg = None

    def forget_later(self, call: EdgeCall) -> None:
        """Keep a refused call until its ACK can arrive (64*T1), then drop it."""
        asyncio.get_running_loop().call_later(64 * self.settings.timer_t1, self.forget, call)

    def build_in_dialog(self, call: EdgeCall, method: str) -> SipRequest:
        host, port = self.signalling_addr()
        request = call.dialog.create_request(
            method, via_host=host, via_port=port, via_transport=self.name.upper()
        )
        request.headers.set_single("Max-Forwards", str(self.settings.max_forwards))
        if method != "BYE":
            request.headers.set_single("Contact", self.contact_value())
        if self.user_agent:
            request.headers.set_single("User-Agent", self.user_agent)
        return request

    def legs(self) -> list[SipLeg]:
        return [c.leg for c in self._calls.values() if isinstance(c, EdgeCall) and c.leg is not None]

    async def stop(self) -> None:
        self.requests.close()
        for leg in self.legs():
            leg.close()
        await super().stop()
