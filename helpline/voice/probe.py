"""An RTP probe: a stand-alone receiver that measures streams as a peer sees them.

Run as a separate process (``python -m helpline.voice.probe``) so its timestamps are not disturbed
by the sender's event loop: it binds ``--count`` UDP sockets, prints ``{"ports": [...]}`` as one JSON
line, receives for ``--duration`` seconds (or until stdin closes), then prints one JSON line of
results. Arrival times come from the kernel (SO_TIMESTAMPNS) where available. Tests and the media
benchmark use it; it also serves for field checks of a trunk's media path.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import select
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35 if sys.platform == "linux" else None)
_TIMESPEC = struct.Struct("@qq")
_HEADER = struct.Struct("!BBHII")
_SAMPLE_RATE = 8000


@dataclass(slots=True)
class StreamStats:
    """What one socket received."""

    packets: int = 0
    octets: int = 0
    first_seq: int | None = None
    highest_seq: int = 0  # extended (wrap-counted) sequence number
    first_arrival: float = 0.0
    last_arrival: float = 0.0
    last_rtp_ts: int = 0
    transit: float | None = None
    jitter: float = 0.0  # RFC 3550 interarrival jitter, in seconds
    ts_steps_off: int = 0  # consecutive packets whose RTP timestamp step is not 160
    intervals: list[float] = field(default_factory=list)
    payload_types: dict[int, int] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)

    def add(self, data: bytes, arrival: float, source: str) -> None:
        """Account one datagram."""
        self.packets += 1
        self.octets += len(data)
        self.sources[source] = self.sources.get(source, 0) + 1
        if len(data) < _HEADER.size:
            return
        _, second, seq, ts, _ = _HEADER.unpack_from(data)
        pt = second & 0x7F
        self.payload_types[pt] = self.payload_types.get(pt, 0) + 1
        if self.first_seq is None:
            self.first_seq = self.highest_seq = seq
            self.first_arrival = arrival
        else:
            self.intervals.append(arrival - self.last_arrival)
            delta = (seq - self.highest_seq) & 0xFFFF
            if delta < 0x8000:
                self.highest_seq += delta
            if (ts - self.last_rtp_ts) & 0xFFFFFFFF != 160:
                self.ts_steps_off += 1
        transit = arrival - ts / _SAMPLE_RATE
        if self.transit is not None:
            d = abs(transit - self.transit)
            self.jitter += (d - self.jitter) / 16
        self.transit = transit
        self.last_rtp_ts = ts
        self.last_arrival = arrival

    def summary(self) -> dict[str, Any]:
        """JSON-able figures for this stream."""
        expected = self.highest_seq - self.first_seq + 1 if self.first_seq is not None else 0
        return {
            "packets": self.packets,
            "bytes": self.octets,
            "expected": expected,
            "lost": max(0, expected - self.packets),
            "span_s": self.last_arrival - self.first_arrival,
            "jitter_ms": self.jitter * 1000,
            "ts_steps_off": self.ts_steps_off,
            "payload_types": self.payload_types,
            "sources": self.sources,
            **interval_summary(self.intervals),
        }


def percentile(values: list[float], share: float) -> float:
    """The ``share`` quantile (nearest rank) of ``values``; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def interval_summary(intervals: list[float]) -> dict[str, float]:
    """Mean, p5, p50, p95, p99 and max of inter-arrival intervals, in ms."""
    if not intervals:
        return {"interval_mean_ms": 0.0, "interval_p5_ms": 0.0, "interval_p50_ms": 0.0,
                "interval_p95_ms": 0.0, "interval_p99_ms": 0.0, "interval_max_ms": 0.0}
    return {
        "interval_mean_ms": sum(intervals) / len(intervals) * 1000,
        "interval_p5_ms": percentile(intervals, 0.05) * 1000,
        "interval_p50_ms": percentile(intervals, 0.50) * 1000,
        "interval_p95_ms": percentile(intervals, 0.95) * 1000,
        "interval_p99_ms": percentile(intervals, 0.99) * 1000,
        "interval_max_ms": max(intervals) * 1000,
    }


def _arrival(ancdata: list[tuple[int, int, bytes]]) -> float:
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(payload)
            return float(sec + nsec / 1e9)
    return time.time()


def run_probe(host: str, count: int, duration: float, *,
              keep_payload_of: int | None = None) -> dict[str, Any]:
    """Receive on ``count`` sockets; announce ports on stdout; return the results after ``duration``.

    ``keep_payload_of``: index of a socket whose payloads are kept (hex) for audio checks.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets = []
    for _ in range(count):
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        if SO_TIMESTAMPNS is not None:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.bind((host, 0))
        sock.setblocking(False)
        sockets.append(sock)
    by_fd = {sock.fileno(): (index, sock) for index, sock in enumerate(sockets)}
    stats = [StreamStats() for _ in sockets]
    kept: list[str] = []
    poller = select.epoll()
    for fd in by_fd:
        poller.register(fd, select.EPOLLIN)
    with contextlib.suppress(OSError):  # stdin a file or /dev/null: run for the full duration
        poller.register(sys.stdin.fileno(), select.EPOLLIN | select.EPOLLHUP)
    print(json.dumps({"ports": [sock.getsockname()[1] for sock in sockets]}), flush=True)
    cpu_start, wall_start = time.process_time(), time.monotonic()
    deadline = wall_start + duration
    running = True
    while running:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        for fd, _ in poller.poll(min(remaining, 0.5)):
            if fd not in by_fd:
                running = False  # stdin closed: the driver is done
                continue
            index, sock = by_fd[fd]
            while True:
                try:
                    data, ancdata, _, addr = sock.recvmsg(2048, 64)
                except BlockingIOError:
                    break
                stats[index].add(data, _arrival(ancdata), f"{addr[0]}:{addr[1]}")
                if index == keep_payload_of:
                    kept.append(data.hex())
    cpu = time.process_time() - cpu_start
    wall = time.monotonic() - wall_start
    streams = [s.summary() for s in stats]
    all_intervals = [i for s in stats for i in s.intervals]
    total = sum(s["packets"] for s in streams)
    expected = sum(s["expected"] for s in streams)
    result: dict[str, Any] = {
        "streams": streams,
        "packets": total,
        "expected": expected,
        "lost": sum(s["lost"] for s in streams),
        "loss_pct": 100.0 * (expected - total) / expected if expected else 0.0,
        "jitter_ms_mean": sum(s["jitter_ms"] for s in streams) / len(streams) if streams else 0.0,
        "probe_cpu_pct": 100.0 * cpu / wall if wall else 0.0,
        **interval_summary(all_intervals),
    }
    if keep_payload_of is not None:
        result["kept_packets"] = kept
    for sock in sockets:
        sock.close()
    return result


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: see the module doc."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--keep-payload-of", type=int, default=None)
    args = parser.parse_args(argv)
    result = run_probe(args.host, args.count, args.duration, keep_payload_of=args.keep_payload_of)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
