"""One bound transport of the agent edge: what legs, the registrar and qualify send through.

Wraps the trunk edge's transports (:mod:`..transport`) and non-INVITE client transactions
(:class:`..outbound.InDialogRequests`) so the agent side reuses their fixes: uvloop UDP, answering a
retransmitted request from memory, TCP replies on the request's own connection.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiosipua.headers import parse_uri
from aiosipua.message import SipRequest, SipResponse
from aiosipua.utils import format_addr, generate_branch

from ..outbound import InDialogRequests
from ..responses import copy_transaction_headers
from ..transport import EdgeTcpTransport, EdgeTransport

logger = logging.getLogger(__name__)

Addr = tuple[str, int]


class AgentWire:
    """Sending side of one listener (UDP or TCP) of the agent edge."""

    def __init__(self, transport: EdgeTransport, t1: float, user_agent: str | None) -> None:
        self.transport = transport
        self.t1 = t1
        self.user_agent = user_agent
        self.requests = InDialogRequests(transport, t1)
        self.advertised: Addr = transport.local_addr

    @property
    def name(self) -> str:
        return self.transport.name

    @property
    def reliable(self) -> bool:
        return self.transport.reliable

    def via(self, branch: str | None = None) -> str:
        sent_by = format_addr(*self.advertised)
        return f"SIP/2.0/{self.name.upper()} {sent_by};branch={branch or generate_branch()};rport"

    def contact_value(self) -> str:
        suffix = "" if self.name == "udp" else f";transport={self.name}"  # tcp or tls
        return f"<sip:{format_addr(*self.advertised)}{suffix}>"

    def host_uri(self, user: str) -> str:
        return f"sip:{user}@{format_addr(*self.advertised)}"

    def response(
        self,
        request: SipRequest,
        code: int,
        reason: str,
        headers: Iterable[tuple[str, str]] = (),
        *,
        to_tag: str | None = None,
    ) -> SipResponse:
        """A response to ``request`` (Via, From, To with a tag, Call-ID, CSeq copied)."""
        response = SipResponse(status_code=code, reason_phrase=reason)
        copy_transaction_headers(request, response, to_tag=to_tag)
        for name, value in headers:
            response.headers.append(name, value)
        if self.user_agent:
            response.headers.set_single("Server", self.user_agent)
        return response

    def reply(
        self,
        request: SipRequest,
        code: int,
        reason: str,
        headers: Iterable[tuple[str, str]] = (),
        *,
        to_tag: str | None = None,
    ) -> SipResponse | None:
        """Answer ``request`` (remembered, so its retransmissions get the same answer).

        None when the answer could not be sent (a UDP request without a usable Via, a TCP
        connection already gone); that is logged, never raised.
        """
        response = self.response(request, code, reason, headers, to_tag=to_tag)
        self.send_reply(response)
        return response

    def send_reply(self, response: SipResponse) -> None:
        try:
            self.transport.send_reply(response)
        except (OSError, RuntimeError, ValueError) as exc:
            logger.warning(
                "could not send %s %s over %s: %s",
                response.status_code,
                response.reason_phrase,
                self.name,
                exc,
                extra={"sip_call_id": response.call_id},
            )

    async def reach(self, source: Addr, contact: str) -> Addr:
        """Where to send a request to an agent registered from ``source`` with ``contact``.

        UDP: the source address (the NAT-fixed flow). TCP: the agent's own connection while it is
        open, else a new connection to the advertised contact.

        Raises:
            OSError: TCP and no connection could be opened.
        """
        transport = self.transport
        if not isinstance(transport, EdgeTcpTransport) or transport.has_connection(source):
            return source
        uri = parse_uri(contact)
        target = (uri.host.strip("[]") or source[0], uri.port or 5060)
        if not transport.has_connection(target):
            await transport.connect(target)
        return target

    def send(self, message: SipRequest | SipResponse, destination: Addr) -> None:
        """Send one message.

        Raises:
            OSError, RuntimeError: the transport could not send it (no TCP connection, socket error).
        """
        self.transport.send(message, destination)

    def close(self) -> None:
        self.requests.close()
