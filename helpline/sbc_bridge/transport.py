"""UDP and TCP transports for the edge, extending aiosipua's.

What the base transports lack and these add:

- UDP: aiosipua's protocol asserts ``isinstance(transport, asyncio.DatagramTransport)``, which is
  false for uvloop's UDP transport (nothing is ever received). Ours does not.
- Both: a message that fails to parse is reported to the edge (security event, 400 when it can be
  routed) instead of only logged.
- Both: the last response to each server transaction is remembered (:class:`ReplyMemory`), so a
  retransmitted request is answered with the same response instead of being processed again, and
  over UDP a final non-2xx answer to an INVITE is retransmitted until the ACK (RFC 3261 Timer G).
- TCP: a response goes back on the connection its request came in on (RFC 3261 §18.2.2), not to the
  Via sent-by port, and a garbage Content-Length (lost framing) is reported and closes the connection.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from aiosipua.message import MAX_HEADERS as MAX_PARSED_HEADERS
from aiosipua.message import SipMessage, SipRequest, SipResponse
from aiosipua.transport import (
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    TcpSipTransport,
    UdpSipTransport,
    _stamp_via_received,
)

from .responses import copy_transaction_headers
from .validation import receiving, response_problem, validate_request

if TYPE_CHECKING:
    from .guard import EdgeGuard, Listener

logger = logging.getLogger(__name__)

Addr = tuple[str, int]
_MAX_TCP_ROUTES = 8192
_TRANSACTION_HEADERS = (b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq")
_MAX_COPIED_VIAS = 20
_Key = tuple[str, str, str]


class TransportHooks(Protocol):
    """Where a transport reports bytes it could not turn into a SIP message."""

    def on_unparseable(self, transport: EdgeTransport, data: bytes, addr: Addr, reason: str) -> None: ...


def _top_branch(message: SipMessage) -> str | None:
    vias = message.headers.get("via")
    if not vias:
        return None
    for part in vias[0].split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.lower() == "branch" and value:
            return value
    return None


def _cseq_method(message: SipMessage) -> str:
    raw = message.headers.get_first("cseq") or ""
    parts = raw.split()
    return parts[1].upper() if len(parts) == 2 else ""


@dataclass(slots=True)
class _Remembered:
    response: SipResponse | None
    at: float
    final: bool
    timer_g: asyncio.Task[None] | None = None


class ReplyMemory:
    """The last response per server transaction, keyed by (branch, method, Call-ID).

    A ``None`` response marks a request we chose to drop silently, so its retransmissions stay
    unanswered without being reported again.
    """

    def __init__(self, t1: float, *, retransmit_finals: bool) -> None:
        self._t1 = t1
        self._retransmit_finals = retransmit_finals
        self._entries: dict[_Key, _Remembered] = {}
        self._last_prune = time.monotonic()

    @staticmethod
    def _request_key(request: SipRequest, method: str) -> _Key | None:
        branch = _top_branch(request)
        return (branch, method, request.call_id or "") if branch else None

    def replay(self, request: SipRequest, send: Callable[[SipResponse], None]) -> bool:
        """Handle ``request`` if it retransmits a known transaction; True when it was absorbed.

        An ACK stops Timer G for the INVITE it acknowledges and is still passed on.
        """
        method = request.method.upper()
        if method == "ACK":
            key = self._request_key(request, "INVITE")
            entry = self._entries.get(key) if key else None
            if entry is not None and entry.timer_g is not None:
                entry.timer_g.cancel()
                entry.timer_g = None
            return False
        key = self._request_key(request, method)
        entry = self._entries.get(key) if key else None
        if entry is None:
            return False
        if entry.response is not None:
            send(entry.response)
        return True

    def acknowledged(self, invite: SipRequest) -> None:
        """The 2xx to ``invite`` was ACKed: absorb the INVITE's late retransmissions silently.

        A 2xx's ACK is a transaction of its own (another branch), so :meth:`replay` cannot see it; the
        UAS tells us. After the ACK a retransmitted INVITE needs no answer (RFC 6026: the accepted
        state absorbs it), so the 2xx (~2.7 KB with its SDP) need not stay for the rest of the 64*T1
        window: under load that window held one per call, tens of MB at 400 calls/s.
        """
        key = self._request_key(invite, "INVITE")
        entry = self._entries.get(key) if key else None
        if entry is not None and entry.timer_g is None:
            entry.response = None

    def drop(self, request: SipRequest) -> None:
        """Remember that ``request`` was dropped, so its retransmissions are dropped quietly."""
        key = self._request_key(request, request.method.upper())
        if key is not None:
            self._entries[key] = _Remembered(None, time.monotonic(), True)
            self._prune()

    def remember(self, response: SipResponse, send: Callable[[SipResponse], None]) -> None:
        """Record a response about to be sent; start Timer G for a final non-2xx INVITE answer."""
        branch = _top_branch(response)
        if not branch:
            return
        method = _cseq_method(response)
        key = (branch, method, response.call_id or "")
        old = self._entries.get(key)
        if old is not None and old.timer_g is not None:
            old.timer_g.cancel()
        entry = _Remembered(response, time.monotonic(), response.status_code >= 200)
        self._entries[key] = entry
        if self._retransmit_finals and method == "INVITE" and response.status_code >= 300:
            entry.timer_g = asyncio.get_running_loop().create_task(self._timer_g(entry, send))
        self._prune()

    async def _timer_g(self, entry: _Remembered, send: Callable[[SipResponse], None]) -> None:
        interval, waited = self._t1, 0.0
        while waited < 64 * self._t1 and entry.response is not None:
            await asyncio.sleep(interval)
            waited += interval
            send(entry.response)
            interval = min(interval * 2, 8 * self._t1)
        entry.timer_g = None

    def _prune(self) -> None:
        now = time.monotonic()
        if now - self._last_prune < 1.0:
            return
        self._last_prune = now
        final_linger, provisional_linger = 64 * self._t1, 300.0
        for key in [
            k
            for k, e in self._entries.items()
            if now - e.at > (final_linger if e.final else provisional_linger) and e.timer_g is None
        ]:
            del self._entries[key]

    def close(self) -> None:
        for entry in self._entries.values():
            if entry.timer_g is not None:
                entry.timer_g.cancel()
        self._entries.clear()


def _dispatch_parsed(
    transport: Any, data: bytes, addr: Addr, hooks: TransportHooks | None
) -> SipRequest | SipResponse | None:
    """Parse ``data`` and hand it on; report parse failures and absorb retransmissions.

    Returns the parsed message (None when it did not parse). With a guard, garbage from an
    untrusted source is reported at most once a second and counts toward its flood ban.
    """
    try:
        message = SipMessage.parse(data)
        if isinstance(message, SipRequest):
            _stamp_via_received(message, addr)
    except Exception as exc:
        guard: EdgeGuard | None = transport.guard
        if guard is not None and not guard.unparseable(transport.listener, transport.name, addr):
            return None
        logger.warning("unparseable SIP message from %s:%s over %s: %s", *addr, transport.name, exc)
        if hooks is not None:
            hooks.on_unparseable(transport, data, addr, f"unparseable message: {exc}")
        return None
    if isinstance(message, SipResponse) and (problem := response_problem(data, message)) is not None:
        # e.g. a status code that is not three digits (RFC 4475 bigcode), a CSeq "² INVITE": no
        # transaction may take it
        logger.info("discarding a response from %s:%s: %s", *addr, problem.reason)
        return None
    if isinstance(message, SipRequest):
        if isinstance(transport, EdgeTcpTransport):  # TLS too: replies go back on the connection
            transport.note_request(message, addr)
        if transport.replies.replay(message, transport.send_reply):
            return message
    if transport.on_message is None:
        return message
    try:
        with receiving(data):  # validation also checks the raw start line the parser smoothed over
            transport.on_message(message, addr)
    except Exception:
        logger.exception(
            "error handling SIP message from %s:%s", *addr, extra={"sip_call_id": message.call_id}
        )
    return message


UDP_RECEIVE_BUFFER = 4 * 1024 * 1024


def _grow_receive_buffer(sock: Any) -> None:
    """Ask for a 4 MiB receive buffer: the default (~208 KiB) overflowed at 200 calls/s in bench/.

    The kernel caps the request at ``net.core.rmem_max``; what was granted is logged so an operator
    can raise that limit (root can exceed it with SO_RCVBUFFORCE, which we try first).
    """
    if sock is None:
        return
    for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
        if option is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, UDP_RECEIVE_BUFFER)
            break
        except OSError:
            continue
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if granted < UDP_RECEIVE_BUFFER:
        logger.info("SIP UDP receive buffer is %d bytes (asked %d; raise net.core.rmem_max)",
                    granted, UDP_RECEIVE_BUFFER)


class _EdgeDatagramProtocol(asyncio.DatagramProtocol):
    """Datagram protocol that accepts any loop's UDP transport (uvloop's included)."""

    def __init__(self, owner: EdgeUdpTransport) -> None:
        self._owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._owner._udp_transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def datagram_received(self, data: bytes, addr: Any) -> None:
        owner = self._owner
        source = (str(addr[0]), int(addr[1]))
        guard = owner.guard
        if guard is not None and not guard.admit_bytes(owner.listener, "udp", source, len(data)):
            return
        if len(data) <= 4 and not data.strip():  # a CRLF keepalive from a phone behind NAT
            return
        _dispatch_parsed(owner, data, source, owner.hooks)

    def error_received(self, exc: Exception) -> None:
        logger.warning("UDP socket error: %s", exc)


@dataclass
class EdgeUdpTransport(UdpSipTransport):
    """UDP transport that works under uvloop and reports what it cannot parse."""

    hooks: TransportHooks | None = field(default=None, repr=False)
    t1: float = 0.5
    guard: EdgeGuard | None = field(default=None, repr=False)
    listener: Listener = "trunk"
    name: str = field(default="udp", init=False)

    def __post_init__(self) -> None:
        self.replies = ReplyMemory(self.t1, retransmit_finals=True)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _EdgeDatagramProtocol(self), local_addr=self.local_addr
        )
        self._udp_transport = transport
        _grow_receive_buffer(transport.get_extra_info("socket"))
        bound = transport.get_extra_info("sockname")
        self.local_addr = (str(bound[0]), int(bound[1]))

    def send_reply(self, response: SipResponse) -> None:
        self.replies.remember(response, super().send_reply)
        super().send_reply(response)

    async def stop(self) -> None:
        self.replies.close()
        await super().stop()


def salvage_request(data: bytes, addr: Addr) -> SipRequest | None:
    """Re-read the headers of a message whose start line was unusable, to address a 400 to it."""
    _, sep, rest = data.partition(b"\n")
    if not sep:
        return None
    try:
        message = SipMessage.parse(b"OPTIONS sip:invalid SIP/2.0\r\n" + rest)
    except Exception:
        return None
    if not isinstance(message, SipRequest):
        return None
    _stamp_via_received(message, addr)
    return message


class FramingError(ValueError):
    """A TCP message whose length cannot be determined; the stream is lost after it."""

    def __init__(self, reason: str, head: bytes) -> None:
        super().__init__(reason)
        self.reason = reason
        self.head = head


class MessageTooLarge(FramingError):
    """A stream message over a cap: 513, then close. ``cap`` names it (``stream_message_bytes``, or
    ``header_lines`` for more header lines than the parser takes); ``size`` is at least what was
    seen, ``limit`` the cap."""

    def __init__(self, cap: str, size: int, limit: int, head: bytes) -> None:
        super().__init__(f"{cap}: {size} over {limit}", head)
        self.cap = cap
        self.size = size
        self.limit = limit


async def read_framed_message(reader: asyncio.StreamReader, max_bytes: int | None = None) -> bytes | None:
    """Read one SIP message from a stream by its Content-Length; None at EOF.

    Blank lines between messages (CRLF keepalives, RFC 5626) are skipped. With ``max_bytes`` a
    message larger than that, or with more header lines than the parser accepts, is refused
    before its body is read.

    Raises:
        MessageTooLarge: ``max_bytes`` is set and the message is larger (or has too many lines).
        FramingError: The header section is too large, or Content-Length is not a non-negative
            integer within the body cap.
    """
    head = bytearray()
    lines = 0
    while True:
        try:
            line = await reader.readline()
        except ValueError as exc:  # one line over the stream reader's limit
            if max_bytes is None:
                raise FramingError(f"header line too long: {exc}", bytes(head[:4096])) from exc
            size = max(len(head), max_bytes) + 1
            raise MessageTooLarge("stream_message_bytes", size, max_bytes, bytes(head)) from exc
        if not line:
            return None
        if not head and line in (b"\r\n", b"\n"):
            continue
        head.extend(line)
        lines += 1
        if max_bytes is not None:
            if len(head) > max_bytes:
                raise MessageTooLarge("stream_message_bytes", len(head), max_bytes, bytes(head))
            if lines > MAX_PARSED_HEADERS + 2:  # start line and blank line besides the headers
                raise MessageTooLarge("header_lines", lines, MAX_PARSED_HEADERS, bytes(head[:4096]))
        if len(head) > MAX_HEADER_BYTES:
            raise FramingError(f"header section over {MAX_HEADER_BYTES} bytes", bytes(head[:4096]))
        if line in (b"\r\n", b"\n"):
            break
    length: int | None = None
    for raw_line in bytes(head).split(b"\n")[1:]:
        name, sep, value = raw_line.partition(b":")
        if sep and name.strip().lower() in (b"content-length", b"l"):
            text = value.strip().decode("latin-1")
            if not (0 < len(text) <= 10 and text.isascii() and text.isdigit()):  # not "²", not 5000 digits
                raise FramingError(f"bad Content-Length {text[:32]!r}", bytes(head))
            if length is not None and int(text) != length:  # which one frames the body? (mcl01)
                raise FramingError(f"conflicting Content-Length values {length} and {text}", bytes(head))
            length = int(text)
    length = length or 0
    if max_bytes is not None and len(head) + length > max_bytes:
        raise MessageTooLarge("stream_message_bytes", len(head) + length, max_bytes, bytes(head))
    if length > MAX_BODY_BYTES:
        raise FramingError(f"Content-Length {length} over {MAX_BODY_BYTES}", bytes(head))
    if length:
        return bytes(head) + await reader.readexactly(length)
    return bytes(head)


@dataclass
class EdgeTcpTransport(TcpSipTransport):
    """TCP transport answering on the request's own connection and reporting broken framing."""

    hooks: TransportHooks | None = field(default=None, repr=False)
    t1: float = 0.5
    guard: EdgeGuard | None = field(default=None, repr=False)
    listener: Listener = "trunk"
    name: str = field(default="tcp", init=False)
    _routes: dict[str, Addr] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.replies = ReplyMemory(self.t1, retransmit_finals=False)

    async def start(self) -> None:
        await super().start()
        assert self._server is not None
        bound = self._server.sockets[0].getsockname()
        self.local_addr = (str(bound[0]), int(bound[1]))

    def note_request(self, request: SipRequest, addr: Addr) -> None:
        """Remember which connection a request arrived on, for its responses."""
        branch = _top_branch(request)
        if branch:
            self._routes[branch] = addr
            if len(self._routes) > _MAX_TCP_ROUTES:
                del self._routes[next(iter(self._routes))]

    def send_reply(self, response: SipResponse) -> None:
        self.replies.remember(response, self.send_reply_once)
        self.send_reply_once(response)

    def send_reply_once(self, response: SipResponse) -> None:
        branch = _top_branch(response)
        conn = self._routes.get(branch) if branch else None
        if conn is not None and conn in self._connections:
            self.send(response, conn)
        else:
            super().send_reply(response)

    def has_connection(self, addr: Addr) -> bool:
        return addr in self._connections

    async def _handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read one connection to its end; with a guard, it must be admitted and speak SIP in time.

        The guard may refuse the connection at once (a banned source, too many idle connections from
        it). Until its first message that parses and validates, the connection counts as idle and is
        closed after ``first_message_timeout_s``. A message over the stream cap gets 513 and the
        connection is closed (its framing can no longer be trusted to be worth reading).
        """
        peer = writer.get_extra_info("peername")
        addr = (str(peer[0]), int(peer[1])) if peer else ("0.0.0.0", 0)
        guard = self.guard
        if guard is not None and not guard.admit_connection(self.listener, self.name, addr):
            writer.transport.abort()
            return
        self._connections[addr] = (reader, writer)
        validated = guard is None
        max_bytes = guard.settings.caps.stream_message_bytes if guard is not None else None
        deadline = (
            asyncio.get_running_loop().time() + guard.settings.tcp.first_message_timeout_s
            if guard is not None
            else 0.0
        )
        try:
            while True:
                if validated:
                    data = await read_framed_message(reader, max_bytes)
                else:
                    async with asyncio.timeout_at(deadline):
                        data = await read_framed_message(reader, max_bytes)
                if data is None:
                    break
                if guard is not None and not guard.admit_bytes(self.listener, self.name, addr, len(data)):
                    break  # a source banned while connected
                message = _dispatch_parsed(self, data, addr, self.hooks)
                if not validated and self._valid_first(message):
                    validated = True
                    if guard is not None:
                        guard.connection_validated(self.listener, addr)
        except TimeoutError:
            logger.debug("no valid SIP message from %s:%s over %s in time; closing", *addr, self.name)
        except MessageTooLarge as exc:
            if guard is not None:
                guard.oversize(self.listener, self.name, addr, exc.cap, exc.size, exc.limit)
            self._too_large(exc.head, addr, writer)
        except FramingError as exc:
            logger.warning("TCP framing lost from %s:%s: %s", *addr, exc.reason)
            if self.hooks is not None:
                self.hooks.on_unparseable(self, exc.head, addr, exc.reason)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._connections.pop(addr, None)
            for branch in [b for b, a in self._routes.items() if a == addr]:
                del self._routes[branch]
            if guard is not None:
                guard.connection_closed(self.listener, addr, validated)
            writer.close()
            try:
                async with asyncio.timeout(5):
                    await writer.wait_closed()
            except (ConnectionError, TimeoutError):
                pass

    @staticmethod
    def _valid_first(message: SipRequest | SipResponse | None) -> bool:
        """Whether ``message`` proves the peer speaks SIP: a request that passes validation."""
        return isinstance(message, SipRequest) and validate_request(message, stream=True) is None

    def _too_large(self, head: bytes, addr: Addr, writer: asyncio.StreamWriter) -> None:
        """Answer 513 on the connection, addressed to the request when its head tells enough.

        Only the transaction headers are read from the head (the first few Vias at most): the head
        may be far too long, or have too many lines, for the parser.
        """
        response = SipResponse(status_code=513, reason_phrase="Message Too Large")
        lines = head.split(b"\n")
        kept, vias = [lines[0]], 0
        for line in lines[1:]:
            name = line.partition(b":")[0].strip().lower()
            if name in (b"via", b"v"):
                vias += 1
                if vias > _MAX_COPIED_VIAS:
                    continue
            elif name not in _TRANSACTION_HEADERS:
                continue
            kept.append(line.rstrip(b"\r"))
        try:
            request = SipMessage.parse(b"\r\n".join(kept) + b"\r\n\r\n")
        except Exception:
            request = None
        if isinstance(request, SipRequest) and request.headers.get("via"):
            copy_transaction_headers(request, response)
        logger.info("message over the stream cap from %s:%s over %s; 513 and close", *addr, self.name)
        try:
            writer.write(bytes(response))
        except (ConnectionError, RuntimeError) as exc:
            logger.debug("could not send 513 to %s:%s: %s", *addr, exc)

    async def stop(self) -> None:
        self.replies.close()
        await super().stop()


EdgeTransport = EdgeUdpTransport | EdgeTcpTransport


def free_port_for_udp_and_tcp(host: str) -> int:
    """An ephemeral port free for both UDP and TCP on ``host``.

    Binding UDP to port 0 and then TCP to the port UDP got fails now and then (that TCP port is
    someone's already); this asks the kernel for a TCP port and keeps it only if UDP can have it too.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(family, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port
    raise OSError(f"no port free for both UDP and TCP on {host}")


async def bind_listeners(
    host: str,
    port: int,
    transports: tuple[str, ...],
    hooks: TransportHooks,
    t1: float,
    start: Callable[[str, EdgeTransport], Awaitable[None]],
    *,
    guard: EdgeGuard | None = None,
    listener: Listener = "trunk",
) -> dict[str, Addr]:
    """Create and start one transport per name on one port; the bound address of each.

    UDP goes first, so with ``port`` 0 the others take the ephemeral port UDP was given (one port
    for every transport, as RFC 3263 expects). ``start(name, transport)`` wraps and starts each one.
    Every transport asks ``guard`` (None: no guard) as the ``listener`` it serves.
    """
    bound: dict[str, Addr] = {}
    if port == 0 and len(transports) > 1:
        port = free_port_for_udp_and_tcp(host)
    for name in sorted(transports, key=lambda n: n != "udp"):
        local = (host, port)
        transport: EdgeTransport = (
            EdgeUdpTransport(local_addr=local, hooks=hooks, t1=t1, guard=guard, listener=listener)
            if name == "udp"
            else EdgeTcpTransport(local_addr=local, hooks=hooks, t1=t1, guard=guard, listener=listener)
        )
        await start(name, transport)
        port = transport.local_addr[1]
        bound[name] = transport.local_addr
    if host in ("0.0.0.0", "::"):
        logger.info("listening on a wildcard address; set advertised_host for Contact and Via")
    return bound
