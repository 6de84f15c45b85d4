"""Baseline SIP answerer: the least a server on aiosipua + uvloop can do per call.

Answers every INVITE with 200 + a fixed SDP and lets aiosipua answer BYE with 200; with
``--hangup-after-ms`` it sends the BYE itself that long after answering, so the wire matches a Helpline
call whose flow plays a short prompt and hangs up. Helpline's call-rate figure is reported as a ratio
of this one.

    python -m bench.baseline_answerer --port 5080 --hangup-after-ms 300
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any

import uvloop
from aiosipua import IncomingCall, SipUAS
from aiosipua.sdp import parse_sdp
from aiosipua.transport import UdpSipTransport, _UdpProtocol

logger = logging.getLogger(__name__)

ANSWER = parse_sdp(
    "v=0\r\no=bench 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    "a=sendrecv\r\n"
)


class _UvloopUdpProtocol(_UdpProtocol):
    """aiosipua 0.7.1 asserts the transport is an asyncio.DatagramTransport; uvloop's UDPTransport
    is not a subclass, so accept any transport that can sendto()."""

    def connection_made(self, transport: Any) -> None:
        self._owner._udp_transport = transport


class _UvloopUdpSipTransport(UdpSipTransport):
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UvloopUdpProtocol(self), local_addr=self.local_addr
        )
        self._udp_transport = transport


async def serve(host: str, port: int, hangup_after: float | None) -> None:
    transport = _UvloopUdpSipTransport()
    transport.local_addr = (host, port)
    uas = SipUAS(transport)

    loop = asyncio.get_running_loop()

    def hang_up(call: IncomingCall) -> None:
        # aiosipua forgets a call on the BYE it receives, not on one it sends: drop it here as
        # handle_bye does, or every call stays in memory and GC pauses grow with the run.
        call.hangup()
        uas._remove_invite_transaction(call.invite)
        uas._calls.pop(call.call_id, None)

    def on_invite(call: IncomingCall) -> None:
        call.accept(ANSWER)
        if hangup_after is not None:
            loop.call_later(hangup_after, hang_up, call)

    uas.on_invite = on_invite
    uas.on_bye = lambda call, request: None
    await uas.start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"baseline answerer listening on {host}:{port}", flush=True)
    await stop.wait()
    await uas.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5080)
    parser.add_argument("--hangup-after-ms", type=int, default=None, help="send BYE this long after 200")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    hangup_after = None if args.hangup_after_ms is None else args.hangup_after_ms / 1000
    uvloop.run(serve(args.host, args.port, hangup_after))


if __name__ == "__main__":
    main()
