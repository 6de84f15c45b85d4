"""What RTP from a foreign source costs a latched session, against a valid packet (A16/A17).

Two measurements in one process (uvloop), printed as a table and written to
bench/results/rtp_foreign.json. Run inside a private network namespace:

    unshare -n sh -c 'ip link set lo up && exec .venv/bin/python bench/bench_rtp_foreign.py'

1. ``micro_us``: ``RtpSession.datagram_received`` called directly, best-of-5 mean per packet: a valid
   packet from the latched source (alone, and bridged to a second session, which is the live call's
   path), a foreign packet after the lock, a packet while learning, and an empty method call as the
   floor of any Python-level handler.
2. ``wire``: the same over real UDP. Another process blasts ``--packets`` packets at ``--rate`` per
   second at a latched session, from the latched address (valid) and then from 127.0.0.9 (foreign);
   this process's CPU time over the blast (minus the same window idle) per packet handled. That is
   what a flood to an allocated port costs, uvloop's own receive path included.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import uvloop

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_media import machine_facts, per_call_us, save_results  # noqa: E402
from helpline.voice import MediaBridge, MediaEngine, PromptCache, RtpSession, negotiate  # noqa: E402
from helpline.voice.g711 import PCMU  # noqa: E402
from helpline.voice.rtp import build_rtp_packet  # noqa: E402

HOST = "127.0.0.1"
FOREIGN_HOST = "127.0.0.9"
RESULTS = REPO / "bench" / "results" / "rtp_foreign.json"

BLASTER = textwrap.dedent("""
    import socket, struct, sys, time
    host, port, target = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    count, rate = int(sys.argv[4]), float(sys.argv[5])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, port))
    payload = bytes(160)
    burst = 50
    start = time.monotonic()
    for n in range(0, count, burst):
        for k in range(n, min(n + burst, count)):
            sock.sendto(struct.pack("!BBHII", 0x80, 0, k & 0xFFFF, (k * 160) & 0xFFFFFFFF, 0xBAD) + payload,
                        ("127.0.0.1", target))
        delay = start + (n + burst) / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
""")


def offer_to(port: int) -> bytes:
    return (f"v=0\r\no=- 1 1 IN IP4 {HOST}\r\ns=-\r\nc=IN IP4 {HOST}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
            "a=sendrecv\r\n").encode()


class _Floor:
    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        pass


async def session_to(engine: MediaEngine, peer_port: int) -> RtpSession:
    session = await engine.open_session("bench")
    session.start(negotiate(offer_to(peer_port), HOST, session.local_port))
    return session


async def micro(engine: MediaEngine) -> dict[str, float]:
    peer = (HOST, 40000)
    foreign = (FOREIGN_HOST, 40000)
    packet = build_rtp_packet(0, 1, 160, 0x1234, PCMU.silence_frame)
    a = await session_to(engine, peer[1])
    b = await session_to(engine, 40002)
    for s in (a, b):
        engine._release(s)  # keep the clock out of the way: only the receive path is measured
    results: dict[str, float] = {}
    floor = _Floor()
    results["empty_handler_floor"] = per_call_us(lambda: floor.datagram_received(packet, peer))
    learning = await session_to(engine, 40004)
    engine._release(learning)
    learning._candidate = (HOST, 40006)  # another source already holds the learn window
    learning._learn_until = time.monotonic() + 3600
    results["learning_other_source"] = per_call_us(lambda: learning.datagram_received(packet, foreign))
    a.datagram_received(packet, peer)  # the SDP address: latched and locked
    assert a.stats.latched == peer
    results["valid_latched_unbridged"] = per_call_us(lambda: a.datagram_received(packet, peer))
    results["foreign_after_lock"] = per_call_us(lambda: a.datagram_received(packet, foreign))
    same_ip = (HOST, 40010)
    results["foreign_same_ip_after_lock"] = per_call_us(lambda: a.datagram_received(packet, same_ip))
    bridge = MediaBridge(a, b)
    bridge.start()
    relay = a._relay_out
    assert relay is not None

    def valid_bridged() -> None:
        a.datagram_received(packet, peer)
        relay.queue.clear()  # as the other leg's tick would drain it

    results["valid_latched_bridged"] = per_call_us(valid_bridged)
    bridge.stop()
    for s in (a, b, learning):
        s.close()
    return results


async def wire_run(engine: MediaEngine, *, source: str, packets: int, rate: float) -> dict[str, Any]:
    """Blast ``packets`` from ``source`` at a session latched to 127.0.0.1:<peer port>."""
    peer_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer_sock.bind((HOST, 0))
    peer_port = peer_sock.getsockname()[1]
    session = await session_to(engine, peer_port)
    engine._release(session)  # only its receive path: no paced sends back
    peer_sock.sendto(build_rtp_packet(0, 1, 160, 1, PCMU.silence_frame), (HOST, session.local_port))
    await asyncio.sleep(0.1)
    assert session.stats.latched == (HOST, peer_port), "the first packet from the SDP address latches"
    duration = packets / rate
    idle_cpu0 = time.process_time()
    await asyncio.sleep(duration)
    idle_cpu = time.process_time() - idle_cpu0
    blast_port = peer_port if source == HOST else 0
    if blast_port:
        peer_sock.close()  # the blaster takes the latched address over
    before = session.packets_received + session.foreign_packets
    cpu0, wall0 = time.process_time(), time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", BLASTER, source, str(blast_port), str(session.local_port), str(packets),
        str(rate))
    await asyncio.wait_for(proc.wait(), duration * 3 + 10)
    await asyncio.sleep(0.05)  # the last datagrams
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    handled = session.packets_received + session.foreign_packets - before
    if not blast_port:
        peer_sock.close()
    stats = session.stats
    session.close()
    busy = max(cpu - idle_cpu * wall / duration, 0.0)
    return {
        "source": source, "sent": packets, "handled": handled, "rate_pps": rate,
        "foreign_counted": stats.foreign_packets, "valid_counted": stats.packets_received - 1,
        "cpu_s": round(cpu, 4), "idle_cpu_s": round(idle_cpu, 4),
        "cpu_us_per_packet": round(busy / max(handled, 1) * 1e6, 3),
        "cpu_pct_of_one_core": round(100 * cpu / wall, 1),
    }


def print_table(results: dict[str, Any]) -> None:
    micro_us = results["micro_us"]
    print("\ndatagram_received per packet (us, best-of-5 mean)")
    print(f"{'path':<32} {'us':>8} {'x floor':>8}")
    floor = micro_us["empty_handler_floor"]
    for name, value in micro_us.items():
        print(f"{name:<32} {value:>8.3f} {value / floor:>8.2f}")
    print(f"\nover UDP: {results['packets']} packets at {results['rate_pps']:.0f}/s, receiver CPU per packet")
    print(f"{'traffic':<10} {'handled':>8} {'counted':>8} {'us/pkt':>8} {'cpu %':>7}")
    for row in results["wire"]:
        counted = row["foreign_counted"] if row["kind"] == "foreign" else row["valid_counted"]
        print(f"{row['kind']:<10} {row['handled']:>8} {counted:>8} {row['cpu_us_per_packet']:>8.2f} "
              f"{row['cpu_pct_of_one_core']:>7.1f}")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        engine = MediaEngine(HOST, 39200, 39300, PromptCache(Path(tmp)))
        results: dict[str, Any] = {**machine_facts(), "micro_us": await micro(engine),
                                   "packets": args.packets, "rate_pps": args.rate, "wire": []}
        for kind, source in (("valid", HOST), ("foreign", FOREIGN_HOST), ("valid", HOST),
                             ("foreign", FOREIGN_HOST)):
            row = await wire_run(engine, source=source, packets=args.packets, rate=args.rate)
            results["wire"].append({"kind": kind, **row})
        await engine.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packets", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=50_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the first foreign packet of each run logs a warning
    save_results(uvloop.run(main_async(args)), args.out, print_table)


if __name__ == "__main__":
    main()
