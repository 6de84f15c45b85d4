"""RTP load generator: N concurrent G.711 streams, paced on a monotonic clock, measured at the receiver.

Two targets:

* ``echo``: stream k sends to ``--host``:``--port-min``+k (bench/rtp_echo.py) and measures what comes
  back: the ceiling of a bare uvloop process.
* ``ivr``: sets up ``--calls`` SIP calls to Helpline (tests/support/sip_uac.py, all in parallel), sends
  caller audio to the port each answer names, and measures the prompt audio Helpline sends.

"Late" means later than the stream's best transit by more than the jitter budget (40 ms): a phone
with that jitter buffer would drop it. Prints one JSON summary on stdout.

    python -m bench.rtp_load echo --streams 1000 --seconds 10
    python -m bench.rtp_load ivr --sip 127.0.0.1:5060 --did +18005550100 --streams 500 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import struct
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.rtp_probe import ArrivalStats, make_sdp_offer
from tests.support.sip_uac import SipUac, UacCall

FRAME = 0.020
PAYLOAD = bytes(0xFF for _ in range(160))  # PCMU silence


class _Stream(asyncio.DatagramProtocol):
    def __init__(self, jitter_budget: float) -> None:
        self.stats = ArrivalStats(jitter_budget)
        self.transport: Any = None
        self.remote: tuple[str, int] | None = None
        self.ssrc = random.getrandbits(32)
        self.seq = random.getrandbits(16)
        self.ts = random.getrandbits(32)
        self.measuring = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.measuring and len(data) >= 12:
            seq, ts = struct.unpack_from("!HI", data, 2)
            self.stats.add(seq, ts, time.monotonic())

    def error_received(self, exc: Exception) -> None:
        pass

    def send_frame(self) -> None:
        if self.remote is None:
            return
        self.transport.sendto(
            struct.pack("!BBHII", 0x80, 0, self.seq, self.ts, self.ssrc) + PAYLOAD, self.remote
        )
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + 160) & 0xFFFFFFFF


async def _open_streams(count: int, jitter_budget: float) -> list[_Stream]:
    loop = asyncio.get_running_loop()
    streams = []
    for _ in range(count):
        _, proto = await loop.create_datagram_endpoint(
            lambda: _Stream(jitter_budget), local_addr=("127.0.0.1", 0)
        )
        streams.append(proto)
    return streams


async def _pace(streams: list[_Stream], seconds: float, warmup: float) -> dict[str, float]:
    """Send one frame per stream every 20 ms; measure after ``warmup``. Returns sender lag figures."""
    start = time.monotonic()
    lags: list[float] = []
    ticks = round((warmup + seconds) / FRAME)
    for k in range(ticks):
        due = start + k * FRAME
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        lags.append(time.monotonic() - due)
        if k == round(warmup / FRAME):
            for s in streams:
                s.measuring = True
        for s in streams:
            s.send_frame()
    await asyncio.sleep(0.2)  # let the last echoes arrive
    for s in streams:
        s.measuring = False
    lags.sort()
    return {
        "sender_lag_p99_ms": 1000 * lags[int(0.99 * (len(lags) - 1))],
        "sender_lag_max_ms": 1000 * lags[-1],
    }


def _summarise(streams: list[_Stream]) -> dict[str, Any]:
    sums = [s.stats.summary() for s in streams]
    expected = sum(x.expected for x in sums)
    lost = sum(x.lost for x in sums)
    late = sum(x.late for x in sums)
    devs = sorted(x.p95_interval_dev_ms for x in sums)
    return {
        "streams": len(streams),
        "streams_silent": sum(1 for x in sums if x.received == 0),
        "packets_expected": expected,
        "packets_lost": lost,
        "packets_late": late,
        "loss_pct": 100 * lost / expected if expected else 100.0,
        "late_or_lost_pct": 100 * (lost + late) / expected if expected else 100.0,
        "interval_dev_p95_ms_median_stream": devs[len(devs) // 2] if devs else None,
        "interval_dev_p95_ms_worst_stream": devs[-1] if devs else None,
        "jitter_ms_mean": sum(x.jitter_ms for x in sums) / len(sums) if sums else None,
    }


async def run_echo(args: argparse.Namespace) -> dict[str, Any]:
    streams = await _open_streams(args.streams, args.jitter_budget)
    for k, s in enumerate(streams):
        s.remote = (args.host, args.port_min + k)
    lag = await _pace(streams, args.seconds, args.warmup)
    return {"target": "echo", **_summarise(streams), **lag}


async def run_ivr(args: argparse.Namespace) -> dict[str, Any]:
    host, port = args.sip.rsplit(":", 1)
    streams = await _open_streams(args.streams, args.jitter_budget)
    uac = await SipUac.open()
    sem = asyncio.Semaphore(args.setup_parallel)

    async def place(s: _Stream) -> UacCall | None:
        async with sem:
            local_port = s.transport.get_extra_info("sockname")[1]
            call = await uac.invite(f"sip:{args.did}@{host}:{port}", make_sdp_offer(local_port), timeout=10)
        if call.status != 200 or call.media is None:
            return None
        s.remote = (call.media.host, call.media.port)
        return call

    t0 = time.monotonic()
    calls = await asyncio.gather(*(place(s) for s in streams))
    setup_s = time.monotonic() - t0
    up = [(s, c) for s, c in zip(streams, calls, strict=True) if c is not None]
    lag = await _pace([s for s, _ in up], args.seconds, args.warmup)
    byes = await asyncio.gather(*(c.bye(timeout=5) for _, c in up))
    uac.close()
    return {
        "target": "ivr",
        "calls_requested": args.streams,
        "calls_up": len(up),
        "setup_seconds": setup_s,
        "byes_ok": sum(1 for b in byes if b == 200),
        **_summarise([s for s, _ in up]),
        **lag,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=["echo", "ivr"])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--jitter-budget", type=float, default=0.040)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port-min", type=int, default=30000)
    parser.add_argument("--sip", default="127.0.0.1:5060")
    parser.add_argument("--did", default="+18005550100")
    parser.add_argument("--setup-parallel", type=int, default=100)
    args = parser.parse_args()
    runner = run_echo if args.mode == "echo" else run_ivr
    result = uvloop.run(runner(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
