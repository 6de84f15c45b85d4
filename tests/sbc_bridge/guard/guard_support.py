"""Harness for the guard tests: clocks, an event recorder, raw SIP peers on any 127.0.0.x address.

A module of its own (not conftest) so tests import it by a unique name. Every peer binds its own
source address: inside the test namespace the whole 127.0.0.0/8 is on lo, so "another source" is
just another 127.0.0.x.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiosipua.message import SipMessage as ParsedMessage
from aiosipua.message import SipRequest

from helpline.sbc_bridge.guard import EdgeGuard, SecuritySettings
from tests.sbc_bridge.agents.agent_support import AgentHarness, build_harness
from tests.sbc_bridge.agents.raw_agent import RawAgent, _Protocol
from tests.sbc_bridge.edge_support import Edge, build_edge
from tests.support.sip_uac import SipMessage, build_message, parse_message

Addr = tuple[str, int]


class FakeClock:
    """A monotonic clock and a wall clock that only move when told."""

    def __init__(self, wall: float = 1_800_000_000.0) -> None:
        self.now = 1000.0
        self.wall_now = wall

    def mono(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.wall_now

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall_now += seconds


@dataclass
class Events:
    """Every event the guard reported, with the monotonic time it arrived."""

    seen: list[tuple[str, dict[str, Any], float]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        self.seen.append((kind, data, time.monotonic()))
        self.changed.set()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [data for k, data, _ in self.seen if k == kind]

    def kinds(self) -> list[str]:
        return [k for k, _, _ in self.seen]

    async def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(f"{what} not seen within {timeout}s; events: {self.kinds()}") from None

    async def first(self, kind: str, timeout: float, **match: Any) -> tuple[dict[str, Any], float]:
        """The first event of ``kind`` whose data has ``match``; with its arrival time."""

        def found() -> tuple[dict[str, Any], float] | None:
            for k, data, at in self.seen:
                if k == kind and all(data.get(key) == value for key, value in match.items()):
                    return data, at
            return None

        await self.wait(lambda: found() is not None, timeout, f"{kind} {match}")
        result = found()
        assert result is not None
        return result


def make_guard(events: Events | None = None, clock: FakeClock | None = None, **settings: Any) -> EdgeGuard:
    extra: dict[str, Any] = {}
    if clock is not None:
        extra = {"clock": clock.mono, "wall": clock.wall}
    return EdgeGuard(SecuritySettings.model_validate(settings), on_event=events or Events(), **extra)


def parse_request(data: bytes) -> SipRequest:
    message = ParsedMessage.parse(data)
    assert isinstance(message, SipRequest)
    return message


def request_bytes(
    method: str,
    target: Addr,
    local: Addr,
    *,
    user_agent: str | None = None,
    extra: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    transport: str = "UDP",
    request_uri: str | None = None,
    call_id: str | None = None,
    user: str | None = None,
) -> bytes:
    """An out-of-dialog request with a fresh branch and Call-ID (From/To ``user`` for a REGISTER)."""
    host, port = target
    aor = f"sip:{user}@{host}" if user else f"sip:{host}:{port}"
    headers = [
        ("Via", f"SIP/2.0/{transport} {local[0]}:{local[1]};branch=z9hG4bK{os.urandom(6).hex()};rport"),
        ("Max-Forwards", "70"),
        ("From", f"<{aor if user else f'sip:probe@{local[0]}'}>;tag={os.urandom(4).hex()}"),
        ("To", f"<{aor}>"),
        ("Call-ID", call_id or f"{os.urandom(8).hex()}@guard-test"),
        ("CSeq", f"1 {method}"),
        ("Contact", f"<sip:probe@{local[0]}:{local[1]}>"),
    ]
    if user_agent is not None:
        headers.append(("User-Agent", user_agent))
    headers += extra or []
    if body:
        headers.append(("Content-Type", "application/sdp"))
    return build_message(f"{method} {request_uri or f'sip:{host}:{port}'} SIP/2.0", headers, body)


class UdpPeer:
    """A raw UDP socket bound to ``ip``: send anything, collect whatever comes back."""

    def __init__(self, ip: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, 0))
        self.sock.setblocking(False)
        self.addr: Addr = self.sock.getsockname()

    def close(self) -> None:
        self.sock.close()

    async def send(self, data: bytes, target: Addr) -> None:
        self.sock.sendto(data, target)  # a datagram to lo does not block (uvloop lacks sock_sendto)

    async def recv(self, within: float) -> SipMessage | None:
        """The next SIP message within ``within`` seconds, or None."""
        try:
            async with asyncio.timeout(within):
                data = await asyncio.get_running_loop().sock_recv(self.sock, 65535)
        except TimeoutError:
            return None
        return parse_message(data)

    async def ask(self, data: bytes, target: Addr, within: float = 2.0) -> SipMessage | None:
        """Send a request and return its first final response (None: no answer in time)."""
        await self.send(data, target)
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            reply = await self.recv(left)
            if reply is None:
                return None
            if reply.status >= 200:
                return reply
        return None


async def raw_agent_at(ip: str, registrar: Addr) -> RawAgent:
    """The registrar tests' scriptable agent, bound to ``ip`` instead of 127.0.0.1."""
    holder: dict[str, RawAgent] = {}
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _Protocol(holder), local_addr=(ip, 0)
    )
    agent = RawAgent(transport, registrar)
    holder["agent"] = agent
    return agent


class TcpPeer:
    """One TCP connection from ``ip``; reads SIP messages by Content-Length."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.addr: Addr = writer.get_extra_info("sockname")

    @classmethod
    async def open(cls, ip: str, target: Addr) -> TcpPeer:
        reader, writer = await asyncio.open_connection(target[0], target[1], local_addr=(ip, 0))
        return cls(reader, writer)

    def close(self) -> None:
        self.writer.close()

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def read(self, within: float) -> SipMessage | None:
        """The next message; None at EOF or when nothing came in time."""
        try:
            async with asyncio.timeout(within):
                head = await self.reader.readuntil(b"\r\n\r\n")
                message = parse_message(head)
                length = int(message.header("content-length") or 0)
                body = await self.reader.readexactly(length) if length else b""
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            return None
        return parse_message(head + body)

    async def closed_by_peer(self, within: float) -> bool:
        """Whether the far end closes (EOF or reset) within ``within`` seconds without a message."""
        try:
            async with asyncio.timeout(within):
                data = await self.reader.read(65536)
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        return data == b""


@dataclass
class GuardedEdges:
    """A trunk edge and an agent edge sharing one guard, as the server runs them."""

    guard: EdgeGuard
    events: Events
    trunk: Edge | None = None
    agents: AgentHarness | None = None

    async def stop(self) -> None:
        if self.trunk is not None:
            await self.trunk.bridge.stop()
        if self.agents is not None:
            await self.agents.edge.stop()


async def start_guarded(
    *, trunk: bool = True, agents: bool = True, agent_overrides: dict[str, Any] | None = None, **security: Any
) -> GuardedEdges:
    """Start the requested edges on ephemeral ports around one guard built from ``security``."""
    events = Events()
    guard = make_guard(events, **security)
    edges = GuardedEdges(guard, events)
    try:
        if trunk:
            edge = build_edge()
            edge.bridge.guard = guard  # the harness builds the bridge; attach before start
            guard.trusted = edge.bridge.is_trunk_source
            await edge.bridge.start()
            edges.trunk = edge
        if agents:
            harness = build_harness(**(agent_overrides or {}))
            harness.edge.guard = guard
            await harness.edge.start()
            edges.agents = harness
    except BaseException:
        await edges.stop()
        raise
    return edges
