"""SIP over TLS for the edge: the TCP transport behind a TLS handshake.

The loop runs the server handshake (``start_server(ssl=...)``, bounded by ``handshake_timeout_s``, so a
connection that never completes one is dropped), then each connection is checked against its trunk's
mutual-TLS rule and read exactly as a TCP one by :class:`.transport.EdgeTcpTransport` (framing,
replies on the same connection, the guard's connection accounting).

Why not upgrade each accepted TCP connection with ``start_tls`` (which would let the context, and the
guard, see the peer before the handshake): under uvloop the ClientHello is read before any protocol
can pause the socket, and the handshake then never completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .guard.tls import TlsContexts
from .transport import Addr, EdgeTcpTransport, EdgeTransport, TransportHooks

if TYPE_CHECKING:
    from .agents.settings import AgentEdgeSettings
    from .config import SipSettings, TrunkConfig
    from .guard import EdgeGuard, Listener

logger = logging.getLogger(__name__)

OnSecurity = Callable[[str, dict[str, Any]], None]
HANDSHAKE_TIMEOUT_S = 10.0


@dataclass
class EdgeTlsTransport(EdgeTcpTransport):
    """TLS listener (``name`` "tls", reliable).

    ``on_security(type, data)`` receives ``security.tls_refused`` when a connection from a mutual-TLS
    trunk's address presents no certificate, one its CA did not sign, or one without its
    ``tls_client_name``; the connection is closed before any SIP is read from it. Handshakes that
    fail (old protocol versions, no forward-secret suite in common, a certificate no configured CA
    signed) never reach this code: the loop drops them.
    """

    tls: TlsContexts | None = field(default=None, repr=False)
    on_security: OnSecurity | None = field(default=None, repr=False)
    handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S
    name: str = field(default="tls", init=False)

    def _contexts(self) -> TlsContexts:
        if self.tls is None:
            raise RuntimeError("EdgeTlsTransport needs TLS contexts (tls=TlsContexts(...))")
        return self.tls

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle_connection,
            host=self.local_addr[0],
            port=self.local_addr[1],
            ssl=self._contexts().server,
            ssl_handshake_timeout=self.handshake_timeout_s,
        )
        bound = self._server.sockets[0].getsockname()
        self.local_addr = (str(bound[0]), int(bound[1]))

    async def _handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        addr: Addr = (str(peer[0]), int(peer[1])) if peer else ("0.0.0.0", 0)
        rule = self._contexts().rule_for(addr[0])
        if rule is not None:
            tls_object = writer.get_extra_info("ssl_object")
            der = tls_object.getpeercert(binary_form=True) if tls_object is not None else None
            problem = rule.problem(der, writer.get_extra_info("peercert"))
            if problem is not None:
                self._refuse(addr, rule.trunk, problem)
                writer.close()
                with contextlib.suppress(ConnectionError, OSError, TimeoutError):
                    async with asyncio.timeout(2):
                        await writer.wait_closed()
                return
        await super()._handle_connection(reader, writer)

    def _refuse(self, addr: Addr, trunk: str, reason: str) -> None:
        logger.warning("TLS connection from %s:%s (trunk %s) refused: %s", *addr, trunk, reason)
        if self.on_security is None:
            return
        data = {"source": f"{addr[0]}:{addr[1]}", "transport": self.name, "trunk": trunk, "reason": reason}
        try:
            self.on_security("security.tls_refused", data)
        except Exception:
            logger.exception("on_security handler failed for security.tls_refused")

    async def connect(self, remote_addr: Addr) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open a TLS connection to ``remote_addr``, verifying its certificate (see ``client_context``).

        Raises:
            OSError: No connection, or the peer's certificate did not verify (``ssl.SSLError``).
        """
        reader, writer = await asyncio.open_connection(
            remote_addr[0],
            remote_addr[1],
            ssl=self._contexts().client,
            ssl_handshake_timeout=self.handshake_timeout_s,
        )
        self._connections[remote_addr] = (reader, writer)
        self._spawn(self._handle_incoming(reader, writer, remote_addr))
        return reader, writer


async def bind_tls_listener(
    settings: SipSettings | AgentEdgeSettings,
    hooks: TransportHooks,
    start: Callable[[str, EdgeTransport], Awaitable[None]],
    *,
    trunks: Sequence[TrunkConfig] = (),
    guard: EdgeGuard | None = None,
    listener: Listener = "trunk",
    on_security: OnSecurity | None = None,
) -> Addr | None:
    """Create and start a listener's TLS transport on ``settings.tls_port``; its bound address.

    None when there is nothing to start: ``tls_port`` is None, or no certificate is configured (the
    server fills one with ``guard.tls.resolve_tls`` first; a bridge built directly without one, as in
    tests, runs without TLS and says so in the log). The contexts are built in a thread (they read
    PEM files). ``start("tls", transport)`` wraps and starts it, as for
    :func:`.transport.bind_listeners`.

    Raises:
        OSError, ssl.SSLError, ValueError: A certificate, key or CA file is unreadable or not PEM, or
            the port cannot be bound.
    """
    if settings.tls_port is None:
        return None
    if settings.tls_certificate is None or settings.tls_key is None:
        logger.warning(
            "no TLS listener on port %d: tls_certificate/tls_key unset (resolve_tls generates a pair)",
            settings.tls_port,
        )
        return None
    contexts = await asyncio.to_thread(
        TlsContexts, settings.tls_certificate, settings.tls_key, settings.tls_min_version, trunks
    )
    transport = EdgeTlsTransport(
        local_addr=(settings.host, settings.tls_port),
        hooks=hooks,
        t1=settings.timer_t1,
        guard=guard,
        listener=listener,
        tls=contexts,
        on_security=on_security,
    )
    await start("tls", transport)
    return transport.local_addr
