"""Helpers for the media engine tests: SDP offers, raw RTP packets and a raw UDP peer.

A module of its own (not conftest) so tests import it by a unique name."""

from __future__ import annotations

import asyncio
import struct
import time
from dataclasses import dataclass, field

HOST = "127.0.0.1"


def offer(port: int, formats: str = "0 8 101", *, extra: str = "", direction: str = "sendrecv",
          address: str = HOST) -> bytes:
    """A caller's SDP offer, written out by hand (independent of the builder under test)."""
    lines = [
        "v=0", f"o=caller 1 1 IN IP4 {address}", "s=-", f"c=IN IP4 {address}", "t=0 0",
        f"m=audio {port} RTP/AVP {formats}", "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16", f"a={direction}",
    ]
    if extra:
        lines.append(extra)
    return ("\r\n".join(lines) + "\r\n").encode()


def rtp(pt: int, seq: int, ts: int, payload: bytes, *, ssrc: int = 0x1234, marker: bool = False) -> bytes:
    """An RTP packet built by hand."""
    header = struct.pack("!BBHII", 0x80, pt | (0x80 if marker else 0), seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
    return header + payload


@dataclass
class Peer(asyncio.DatagramProtocol):
    """A raw UDP endpoint standing in for the caller's phone: records (arrival, source, data)."""

    received: list[tuple[float, tuple[str, int], bytes]] = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append((time.monotonic(), addr, data))
        self.arrived.set()

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, data: bytes, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(data, (HOST, port))

    async def wait_packets(self, count: int, within: float = 3.0) -> None:
        async with asyncio.timeout(within):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
