"""Requests we send inside a dialog (BYE, UPDATE, REFER), with their client transactions.

aiosipua sends in-dialog requests once, to the address the INVITE came from, with a UDP Via, and
ignores their responses. A carrier expects more (RFC 3261 §12.2.1.1, §17.1.2): the request goes to
the remote target (the Contact) through the route set built from Record-Route, over TCP on the
dialog's own connection, is retransmitted over UDP until a final response, and times out after
64*T1. This module does exactly that and nothing more.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket

from aiosipua.dialog import Dialog
from aiosipua.headers import parse_address, parse_uri
from aiosipua.message import SipRequest, SipResponse

from .transport import EdgeTcpTransport, EdgeTransport, _top_branch

logger = logging.getLogger(__name__)

Addr = tuple[str, int]


class InDialogRequests:
    """Sends non-INVITE in-dialog requests and matches their responses by Via branch."""

    def __init__(self, transport: EdgeTransport, t1: float) -> None:
        self._transport = transport
        self._t1 = t1
        self._pending: dict[str, asyncio.Future[SipResponse]] = {}

    def on_response(self, response: SipResponse) -> bool:
        """Deliver a response to the request waiting for it; False when nobody waits."""
        branch = _top_branch(response)
        future = self._pending.get(branch) if branch else None
        if future is None:
            return False
        if response.status_code >= 200 and not future.done():
            future.set_result(response)
        return True

    async def send(self, request: SipRequest, destination: Addr) -> SipResponse | None:
        """Send ``request`` and wait for its final response; None after 64*T1 without one."""
        branch = _top_branch(request)
        if branch is None:
            raise ValueError("in-dialog request without a Via branch")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[SipResponse] = loop.create_future()
        self._pending[branch] = future
        try:
            self._transport.send(request, destination)
            deadline = loop.time() + 64 * self._t1
            interval = self._t1
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
                # arrives as the response does, leaving the caller's task running after cancel().
                try:
                    async with asyncio.timeout(min(interval, remaining)):
                        return await asyncio.shield(future)
                except TimeoutError:
                    if not self._transport.reliable:
                        self._transport.send(request, destination)
                    interval = min(interval * 2, 8 * self._t1)
        finally:
            self._pending.pop(branch, None)
            future.cancel()

    def close(self) -> None:
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()


async def next_hop(dialog: Dialog, transport: EdgeTransport, source: Addr) -> Addr:
    """Where an in-dialog request goes: the first Route, else the remote target (RFC 3261 §12.2.1.1).

    Over TCP the dialog's connection is reused while it is open. Host names are resolved without
    blocking the loop.
    """
    if isinstance(transport, EdgeTcpTransport) and transport.has_connection(source):
        return source
    uri = parse_address(dialog.route_set[0]).uri if dialog.route_set else parse_uri(dialog.remote_target)
    host = uri.host.strip("[]") or source[0]
    port = uri.port or 5060
    try:
        ipaddress.ip_address(host)
    except ValueError:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_DGRAM if not transport.reliable else socket.SOCK_STREAM
        )
        host = str(infos[0][4][0])
    if isinstance(transport, EdgeTcpTransport) and not transport.has_connection((host, port)):
        await transport.connect((host, port))
    return host, port
