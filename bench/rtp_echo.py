"""Bare uvloop RTP echo: the media ceiling of one Python process on this machine.

Every datagram on any of ``--count`` consecutive ports is sent back to where it came from.

    python -m bench.rtp_echo --port-min 30000 --count 1500
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import uvloop


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)


async def serve(host: str, port_min: int, count: int) -> None:
    loop = asyncio.get_running_loop()
    transports = []
    for port in range(port_min, port_min + count):
        transport, _ = await loop.create_datagram_endpoint(_Echo, local_addr=(host, port))
        transports.append(transport)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"rtp echo on {host}:{port_min}-{port_min + count - 1}", flush=True)
    await stop.wait()
    for transport in transports:
        transport.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port-min", type=int, default=30000)
    parser.add_argument("--count", type=int, default=1500)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port_min, args.count))


if __name__ == "__main__":
    main()
