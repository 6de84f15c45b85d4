"""The RFC 4475 torture corpus (tests/sip_torture/) and raw UDP/TCP peers that replay it.

Each ``<name>.sip`` file is one message written by us after the RFC's description, stored with LF
line ends (sent as CRLF) and placeholders the harness fills in:

- ``{{edge}}``: the listener's host:port; ``{{via}}``: the sender's host:port (the top Via, so the
  answer comes back to the test socket); ``{{transport}}``: UDP or TCP;
- ``{{did}}``: the trunk's DID in national form; ``{{user}}``: an agent extension;
- ``{{length}}``: the byte length of the body that follows the blank line after it.

``expected.toml`` holds, per message, the RFC section, what it exercises, and the reaction expected
per listener and transport (see :class:`Expectation`).
"""

from __future__ import annotations

import asyncio
import re
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).parents[1] / "sip_torture"
Addr = tuple[str, int]


@dataclass(frozen=True)
class Expectation:
    """One manifest entry.

    ``reactions`` maps ``"trunk.udp"``, ``"trunk.tcp"``, ``"agents.udp"``, ``"agents.tcp"`` to the
    reaction: final status codes in order, ``call`` (the INVITE reached ``on_call``), ``silence`` (no
    answer), ``close`` (the edge closed the TCP connection), ``n/a`` (not sent on that transport),
    joined by ``,``. ``warning`` is the header the 400's Warning must name; ``headers`` must be in the
    answer; ``binding`` is the contact the agent registrar must store after a digest-authenticated
    retry (agents only).
    """

    name: str
    section: str
    title: str
    tests: str
    rfc: str
    why: str
    reactions: dict[str, str]
    warning: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    binding: str | None = None

    def reaction(self, listener: str, transport: str) -> str:
        key = f"{listener}.{transport}"
        if key in self.reactions:
            return self.reactions[key]
        return self.reactions[f"{listener}.udp"]


def load_manifest() -> list[Expectation]:
    data: dict[str, Any] = tomllib.loads((CORPUS / "expected.toml").read_text())
    out = []
    for entry in data["message"]:
        reactions = {
            f"{listener}.{transport}": str(value)
            for listener in ("trunk", "agents")
            for transport, value in entry.get(listener, {}).items()
        }
        out.append(
            Expectation(
                name=entry["name"],
                section=entry["section"],
                title=entry["title"],
                tests=entry["tests"],
                rfc=entry["rfc"],
                why=entry["why"],
                reactions=reactions,
                warning=entry.get("warning"),
                headers=dict(entry.get("headers", {})),
                binding=entry.get("binding"),
            )
        )
    return out


def render(name: str, *, edge: Addr, via: Addr, transport: str, did: str, user: str) -> bytes:
    """The wire bytes of corpus message ``name`` for this listener and sender."""
    raw = (CORPUS / f"{name}.sip").read_bytes().replace(b"\n", b"\r\n")
    values = {
        b"{{edge}}": f"{edge[0]}:{edge[1]}".encode(),
        b"{{via}}": f"{via[0]}:{via[1]}".encode(),
        b"{{transport}}": transport.upper().encode(),
        b"{{did}}": did.encode(),
        b"{{user}}": user.encode(),
    }
    for key, value in values.items():
        raw = raw.replace(key, value)
    while (at := raw.find(b"{{length}}")) >= 0:
        body_at = raw.find(b"\r\n\r\n", at) + 4
        raw = raw[:at] + str(len(raw) - body_at).encode() + raw[at + len(b"{{length}}") :]
    return raw


# --- answers as the test reads them ---


@dataclass
class Answer:
    """One SIP response as received: status, reason, headers by lower-case name (all values)."""

    status: int
    reason: str
    headers: dict[str, list[str]]
    raw: bytes

    @classmethod
    def parse(cls, data: bytes) -> Answer | None:
        head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
        lines = head.split("\r\n")
        match = re.match(r"^SIP/2\.0 (\d{3}) ?(.*)$", lines[0])
        if match is None:
            return None
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers.setdefault(name.strip().lower(), []).append(value.strip())
        return cls(int(match.group(1)), match.group(2), headers, data)

    def first(self, name: str) -> str:
        values = self.headers.get(name.lower())
        return values[0] if values else ""


class UdpPeer:
    """A raw UDP socket on 127.0.0.1 that keeps only responses (an edge may also send requests)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.addr: Addr = self.sock.getsockname()

    async def send(self, data: bytes, target: Addr) -> None:
        await asyncio.get_running_loop().sock_sendto(self.sock, data, target)

    async def answer(self, within: float) -> Answer | None:
        """The next response within ``within`` seconds; None on silence."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(within):
                while True:
                    data = await loop.sock_recv(self.sock, 65535)
                    answer = Answer.parse(data)
                    if answer is not None:
                        return answer
        except TimeoutError:
            return None

    async def request(self, method: str, within: float) -> bytes | None:
        """The next ``method`` request the edge sends within ``within`` seconds; None on silence."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(within):
                while True:
                    data = await loop.sock_recv(self.sock, 65535)
                    if data.startswith(method.encode() + b" "):
                        return data
        except TimeoutError:
            return None

    def close(self) -> None:
        self.sock.close()


def reply_to(request: bytes, status_line: str) -> bytes:
    """A response to ``request`` (its Via, From, To, Call-ID and CSeq) with a given status line."""
    head = request.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace").split("\r\n")
    copied = [
        line
        for line in head[1:]
        if line.partition(":")[0].strip().lower()
        in ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq")
    ]
    return ("\r\n".join([status_line, *copied, "Content-Length: 0"]) + "\r\n\r\n").encode()


class TcpPeer:
    """One TCP connection to the edge, reading responses framed by Content-Length."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        host, port = writer.get_extra_info("sockname")[:2]
        self.addr: Addr = (str(host), int(port))
        self.closed = False

    @classmethod
    async def open(cls, target: Addr) -> TcpPeer:
        async with asyncio.timeout(5):
            reader, writer = await asyncio.open_connection(*target)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, within: float) -> Answer | None:
        """The next response within ``within`` seconds; None on silence or close (see ``closed``)."""
        try:
            async with asyncio.timeout(within):
                while True:
                    head = await self.reader.readuntil(b"\r\n\r\n")
                    match = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
                    body = await self.reader.readexactly(int(match.group(1))) if match else b""
                    answer = Answer.parse(head + body)
                    if answer is not None:
                        return answer
        except TimeoutError:
            return None
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed = True
            return None

    async def closed_within(self, within: float) -> bool:
        """Whether the edge closes the connection within ``within`` seconds (reading what remains)."""
        if self.closed:
            return True
        try:
            async with asyncio.timeout(within):
                while await self.reader.read(4096):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            pass
        self.closed = True
        return True

    async def close(self) -> None:
        self.writer.close()
        try:
            async with asyncio.timeout(2):
                await self.writer.wait_closed()
        except (TimeoutError, ConnectionError):
            pass


def ack_for(answer: Answer, request_uri: str, transport: str, via: Addr) -> bytes:
    """ACK for a final non-2xx answer to an INVITE: the INVITE's branch, the answer's To."""
    top_via = answer.first("via")
    seq = answer.first("cseq").split()[0]
    lines = [
        f"ACK {request_uri} SIP/2.0",
        f"Via: {top_via}" if top_via else f"Via: SIP/2.0/{transport.upper()} {via[0]}:{via[1]}",
        f"From: {answer.first('from')}",
        f"To: {answer.first('to')}",
        f"Call-ID: {answer.first('call-id')}",
        f"CSeq: {seq} ACK",
        "Max-Forwards: 70",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def request_uri_of(message: bytes) -> str:
    parts = message.split(b"\r\n", 1)[0].split()
    return parts[1].decode("utf-8", "replace") if len(parts) > 1 else "sip:invalid"
