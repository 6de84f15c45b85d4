"""One inbound SIP leg: aiosipua's IncomingCall, extended, and the controller behind InboundCall.

Gaps in aiosipua's ``IncomingCall`` fixed here:

- Contact in our responses carries ``;transport=tcp`` on TCP, so the carrier keeps the dialog on
  TCP; 18x/2xx answers carry Allow and Supported.
- 2xx retransmission and the ACK timeout use the configured T1; over TCP the 2xx is not resent but
  the ACK is still awaited (RFC 3261 §13.3.1.4).
- No ACK → the session is ended with a BYE (aiosipua only marks the dialog terminated).
- ``hangup`` sends the BYE to the remote target via the route set, with the right Via transport,
  retransmitted until answered (see :mod:`.outbound`), and never before the ACK (RFC 3261 §15).
- Session refresh (RFC 4028) goes through a real client transaction: a refresh that times out or
  gets 408/481 means the session is dead and the call ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiosipua.dialog import DialogState
from aiosipua.incoming_call import IncomingCall
from aiosipua.message import SipRequest, SipResponse

from .call import CallEnd, EndedBy, InboundCall
from .outbound import next_hop

if TYPE_CHECKING:
    from .uas import EdgeUas

logger = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO, NOTIFY"
SUPPORTED = "timer"


@dataclass
class EdgeCall(IncomingCall):
    """IncomingCall with the edge's Contact, headers and timers."""

    t1: float = field(default=0.5, repr=False)
    contact_value: str = field(default="", repr=False)
    leg: SipLeg | None = field(default=None, repr=False)

    def _send_response(
        self,
        status_code: int,
        reason: str,
        *,
        body: str = "",
        content_type: str = "",
        extra_headers: dict[str, str] | None = None,
    ) -> SipResponse | None:
        establishing = 100 < status_code < 300
        resp = self.dialog.create_response(
            self.invite, status_code, reason, contact=self.contact_value if establishing else None
        )
        if body:
            resp.text = body
            resp.headers.set_single("Content-Type", content_type)
        if establishing:
            resp.headers.set_single("Allow", ALLOW)
            resp.headers.set_single("Supported", SUPPORTED)
        if self.user_agent:
            resp.headers.set_single("Server", self.user_agent)
        for name, value in (extra_headers or {}).items():
            resp.headers.set_single(name, value)
        if self.transport is None:
            return None
        self.transport.send_reply(resp)
        return resp

    async def _retransmit_loop(self, response: SipResponse, on_timeout: Callable[[], None]) -> None:
        interval, waited = self.t1, 0.0
        resend = self.transport is not None and not self.transport.reliable
        while waited < 64 * self.t1:
            await asyncio.sleep(interval)
            waited += interval
            if resend and self.transport is not None:
                self.transport.send_reply(response)
            interval = min(interval * 2, 8 * self.t1)
        on_timeout()

    def hangup(self) -> SipRequest | None:
        if self.leg is not None:
            self.leg.hangup()
        return None


class SipLeg:
    """Drives one :class:`EdgeCall` for the upper layer; implements :class:`.call.CallLeg`."""

    def __init__(self, uas: EdgeUas, call: EdgeCall) -> None:
        self.uas = uas
        self.call = call
        self.public: InboundCall | None = None
        self.offer: bytes | None = None
        self.local_sdp: bytes | None = None
        self.ended = False
        self._bye_pending = False
        self._acked = asyncio.Event()
        self._transfer: asyncio.Future[int] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def sip_call_id(self) -> str:
        return self.call.call_id

    def _log_extra(self) -> dict[str, str]:
        return {"sip_call_id": self.sip_call_id}

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def unanswered(self) -> bool:
        return not self.call._answered and self.call.dialog.state == DialogState.EARLY

    # --- CallLeg ---

    def ringing(self, early_sdp: bytes | None) -> None:
        if not self.unanswered():
            logger.warning("ringing() on a call that is no longer ringing", extra=self._log_extra())
            return
        if early_sdp is None:
            self.call._send_response(180, "Ringing")
        else:
            self.call._send_response(
                183, "Session Progress", body=early_sdp.decode("utf-8"), content_type="application/sdp"
            )

    def answer(self, sdp: bytes) -> None:
        if not self.unanswered():
            logger.warning("answer() on a call that is no longer ringing", extra=self._log_extra())
            return
        self.local_sdp = sdp
        self._send_2xx(sdp)
        self.call.dialog.confirm()
        self.call._answered = True

    def _send_2xx(self, sdp: bytes | None) -> None:
        call = self.call
        extra: dict[str, str] = {}
        if call.session_interval:
            refresher = "uas" if call.session_refresher_us else "uac"
            extra["Session-Expires"] = f"{call.session_interval};refresher={refresher}"
            if call._caller_supports("timer"):
                extra["Require"] = "timer"
        response = call._send_response(
            200,
            "OK",
            body=sdp.decode("utf-8") if sdp else "",
            content_type="application/sdp" if sdp else "",
            extra_headers=extra,
        )
        if response is not None:
            call._start_2xx_retransmission(response)

    def reject(self, code: int, reason: str) -> None:
        if not 300 <= code <= 699:
            raise ValueError(f"reject() needs a final error code 300-699, got {code}")
        if not self.unanswered():
            logger.warning("reject() on a call that is no longer ringing", extra=self._log_extra())
            return
        self.call.reject(code, reason)
        self.uas.forget_later(self.call)
        self.end("local", code, reason)

    def hangup(self) -> None:
        if self.ended:
            return
        if self.unanswered():
            self.reject(480, "Temporarily Unavailable")
            return
        if self.call._retrans_task is not None:
            self._bye_pending = True  # RFC 3261 §15: no BYE before the ACK (or its timeout)
            return
        self.send_bye()
        self.end("local", None, "hangup")

    async def refer(self, target_uri: str, timeout: float) -> str:
        if self.ended or self.call.dialog.state != DialogState.CONFIRMED:
            return "failed"
        if self.call._retrans_task is not None:
            # Our 200 is still unacknowledged: a REFER now could overtake it at the peer, which then
            # cannot match the dialog (seen with fast peers). Wait for the ACK, as for BYE (RFC 3261 §15).
            try:
                async with asyncio.timeout(min(timeout, 32.0)):
                    await self._acked.wait()
            except TimeoutError:
                return "failed"
            if self.ended:
                return "failed"
        request = self.uas.build_in_dialog(self.call, "REFER")
        request.headers.set_single("Refer-To", f"<{target_uri}>")
        self._transfer = asyncio.get_running_loop().create_future()
        try:
            response = await self.uas.requests.send(request, await self._destination())
            if response is None or not 200 <= response.status_code < 300:
                return "failed"
            async with asyncio.timeout(timeout):
                status = await self._transfer
        except TimeoutError:
            return "no_answer"
        except (OSError, RuntimeError):
            logger.warning("REFER could not be sent", exc_info=True, extra=self._log_extra())
            return "failed"
        finally:
            self._transfer = None
        if 200 <= status < 300:
            return "connected"
        if status in (486, 600, 603):
            return "busy"
        if status in (408, 480, 487):
            return "no_answer"
        return "failed"

    # --- events from the UAS ---

    def transfer_progress(self, status: int) -> None:
        if self._transfer is not None and status >= 200 and not self._transfer.done():
            self._transfer.set_result(status)

    def acked(self) -> None:
        self._acked.set()
        if self._bye_pending:
            self._bye_pending = False
            self.send_bye()
            self.end("local", None, "hangup")

    def ack_timed_out(self) -> None:
        self.send_bye()
        self.end("ack_timeout", None, "no ACK for 200 OK")

    def session_expired(self) -> None:
        self.send_bye()
        self.end("session_expired", None, "session timer expired without refresh")

    def remote_bye(self) -> None:
        self.end("remote_bye", None, "BYE from caller")

    def cancelled(self) -> None:
        self.end("cancel", 487, "CANCEL from caller")

    def dtmf(self, digit: str, duration_ms: int) -> None:
        if self.public is not None:
            self.public._dtmf(digit, duration_ms)

    def reoffer(self, offer: bytes) -> bytes | None:
        answer = self.public._reoffer(offer) if self.public is not None else None
        if answer is not None:
            self.local_sdp = answer
        return answer

    def send_reinvite_answer(self, sdp: bytes | None) -> None:
        self._send_2xx(sdp)

    def end(self, by: EndedBy, sip_code: int | None, reason: str) -> None:
        if self.ended:
            return
        self.ended = True
        self.call._stop_retransmissions()
        if self._transfer is not None and not self._transfer.done():
            self._transfer.set_result(487)
        public, self.public = self.public, None  # nothing more to report; breaks the cycle with it
        if public is not None:
            public._ended(CallEnd(by, sip_code, reason))

    def shutdown(self) -> None:
        """The edge is stopping: end the call as politely as the state allows."""
        if self.ended:
            return
        if self.unanswered():
            self.reject(503, "Service Unavailable")
        else:
            self.send_bye()
            self.end("local", None, "edge stopping")

    # --- requests we send ---

    async def _destination(self) -> tuple[str, int]:
        return await next_hop(self.call.dialog, self.uas.edge_transport, self.call.source_addr)

    def send_bye(self) -> None:
        """Send BYE (retransmitted until answered) and forget the dialog."""
        if self.call.dialog.state == DialogState.TERMINATED and self.ended:
            return
        bye = self.uas.build_in_dialog(self.call, "BYE")
        self.call.dialog.terminate()
        self.call._stop_retransmissions()
        self.uas.forget(self.call)
        self._spawn(self._send_logged(bye))

    async def _send_logged(self, request: SipRequest) -> SipResponse | None:
        try:
            response = await self.uas.requests.send(request, await self._destination())
        except (OSError, RuntimeError):
            logger.warning("%s could not be sent", request.method, exc_info=True, extra=self._log_extra())
            return None
        if response is None:
            logger.warning("%s got no answer", request.method, extra=self._log_extra())
        return response

    def refresh_session(self) -> None:
        """RFC 4028 refresh from our side: a bodyless UPDATE; failure means the session is dead."""
        if self.ended:
            return
        update = self.uas.build_in_dialog(self.call, "UPDATE")
        update.headers.set_single("Session-Expires", f"{self.call.session_interval};refresher=uas")
        self._spawn(self._refresh(update))

    async def _refresh(self, update: SipRequest) -> None:
        response = await self._send_logged(update)
        status = response.status_code if response is not None else 408
        if status in (408, 481) and not self.ended:
            logger.warning("session refresh failed with %s", status, extra=self._log_extra())
            self.uas.forget(self.call)
            self.session_expired()
        elif status in (405, 501) and self.call._session_timer is not None:
            logger.info("peer refuses UPDATE refreshes; relying on its own timer", extra=self._log_extra())
            self.call._session_timer.cancel()
            self.call._session_timer = None

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
