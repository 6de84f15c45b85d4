"""Media bridge benchmark: the cost of relaying audio between bridged sessions on the engine clock.

Prints a table and writes bench/results/bridge.json. Run inside a private network namespace:

    unshare -n sh -c 'ip link set lo up && exec .venv/bin/python bench/bench_bridge.py'

Per-frame costs: one inbound packet plus one outbound frame of a session pair, bridged (same codec,
and PCMU->PCMA) against the same two calls unbridged; the difference is the relay's cost per frame.

Load runs: for each N, an endpoints process (this script with ``--role endpoints``, uvloop) binds 2N
UDP sockets that stand for the callers' and agents' phones: each sends a 20 ms G.711 tone frame every
20 ms to its session and counts what comes back (audio that is not silence is relayed audio). This
process (uvloop) runs one MediaEngine with 2N sessions in three set-ups, each measured over the same
window: ``baseline`` (unbridged, sending silence, same inbound traffic), ``bridged`` (N pairs, PCMU on
both legs: payload pass-through) and ``transcoded`` (N pairs, PCMU caller and PCMA agent). CPU per
relayed frame is the extra CPU over the baseline divided by the frames relayed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_media import ClockWindow, machine_facts, per_call_us, save_results  # noqa: E402
from helpline.voice import MediaBridge, MediaEngine, PromptCache, RtpSession, SdpSession, negotiate  # noqa: E402
from helpline.voice.g711 import CODECS, FRAME_SAMPLES, PCMA, PCMU  # noqa: E402
from helpline.voice.rtp import RTP_HEADER, build_rtp_packet  # noqa: E402

HOST = "127.0.0.1"
RESULTS = REPO / "bench" / "results" / "bridge.json"
PORT_BASE = 20000
TONE_HZ = 400.0  # 8 whole cycles per 20 ms frame: one frame repeated is a clean tone


def tone_frame(codec: str) -> bytes:
    pcm = struct.pack(f"<{FRAME_SAMPLES}h", *(round(8000 * math.sin(2 * math.pi * TONE_HZ * n / 8000))
                                            for n in range(FRAME_SAMPLES)))
    return CODECS[codec].encode(pcm)


# ---- the phones' side (a separate process) ----------------------------------------------------------
class _Phone(asyncio.DatagramProtocol):
    __slots__ = ("audio", "received", "silence")

    def __init__(self, silence: bytes) -> None:
        self.silence = silence
        self.received = 0
        self.audio = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received += 1
        if data[12:] != self.silence:
            self.audio += 1


async def endpoints(count: int) -> None:
    """Bind ``count`` sockets, print their ports, read targets, send paced frames, report on stop."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    phones: list[tuple[asyncio.DatagramTransport, _Phone]] = []
    for _ in range(count):
        phone = _Phone(b"")
        transport, _ = await loop.create_datagram_endpoint(lambda p=phone: p, local_addr=(HOST, 0))  # type: ignore[misc]
        phones.append((transport, phone))
    print(json.dumps({"ports": [t.get_extra_info("sockname")[1] for t, _ in phones]}), flush=True)
    config = json.loads(await reader.readline())
    targets = []
    for (transport, phone), (port, codec) in zip(phones, config["targets"], strict=True):
        phone.silence = CODECS[codec].silence_frame
        targets.append((transport, (HOST, port), CODECS[codec].payload_type, tone_frame(codec)))
    start = time.monotonic()
    sent = [0]
    running = [True]

    def tick() -> None:
        due = int((time.monotonic() - start) / 0.02) + 1
        while sent[0] < due:
            n = sent[0]
            for transport, addr, pt, payload in targets:
                header = RTP_HEADER.pack(0x80, pt, n & 0xFFFF, (n * 160) & 0xFFFFFFFF, 0x4242)
                transport.sendto(header + payload, addr)
            sent[0] = n + 1
        if running[0]:
            loop.call_later(max(0.001, start + sent[0] * 0.02 - time.monotonic()), tick)

    loop.call_soon(tick)
    marks: dict[str, Any] = {}
    while True:
        line = (await reader.readline()).decode().strip()
        snapshot = {"cpu": time.process_time(), "wall": time.monotonic(), "sent": sent[0] * count,
                    "received": sum(p.received for _, p in phones), "audio": sum(p.audio for _, p in phones)}
        if line == "mark":
            marks = snapshot
            continue
        running[0] = False
        report = {key: snapshot[key] - marks.get(key, 0) for key in snapshot}
        report["cpu_pct"] = 100 * report.pop("cpu") / report.pop("wall")
        print(json.dumps(report), flush=True)
        break
    for transport, _ in phones:
        transport.close()


# ---- this process: the engine ---------------------------------------------------------------------
async def start_endpoints(count: int) -> tuple[asyncio.subprocess.Process, list[int]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--role", "endpoints", "--count", str(count),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 24,
    )
    assert proc.stdout is not None
    ports = json.loads(await asyncio.wait_for(proc.stdout.readline(), 60))["ports"]
    return proc, ports


async def tell(proc: asyncio.subprocess.Process, line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line.encode() + b"\n")
    await proc.stdin.drain()


async def load(pairs: int, mode: str, seconds: float, tmp: Path) -> dict[str, Any]:
    """2 * ``pairs`` sessions fed by the phones process; ``mode`` is baseline, bridged or transcoded."""
    count = 2 * pairs
    proc, ports = await start_endpoints(count)
    engine = MediaEngine(HOST, PORT_BASE, PORT_BASE + 4 * count + 100, PromptCache(tmp), media_timeout=3600)
    sessions: list[RtpSession] = []
    targets: list[tuple[int, str]] = []
    for i, port in enumerate(ports):
        codec = "PCMA" if mode == "transcoded" and i % 2 else "PCMU"
        session = await engine.open_session(f"{mode}-{i}")
        session.start(negotiate(SdpSession().offer(HOST, port, (codec,)), HOST, session.local_port))
        sessions.append(session)
        targets.append((session.local_port, codec))
    bridges = []
    if mode != "baseline":
        for a, b in zip(sessions[0::2], sessions[1::2], strict=True):
            bridge = MediaBridge(a, b)
            bridge.start()
            bridges.append(bridge)
    await tell(proc, json.dumps({"targets": targets}))
    await asyncio.sleep(1.0)  # latching, priming, warm caches
    await tell(proc, "mark")
    clock = ClockWindow(engine)
    relayed0 = sum(s.relayed_a_to_b + s.relayed_b_to_a for s in (b.stats for b in bridges))
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    await tell(proc, "stop")
    frames = clock.frames
    stats = [b.stats for b in bridges]
    relayed = sum(s.relayed_a_to_b + s.relayed_b_to_a for s in stats) - relayed0
    assert proc.stdout is not None
    phones = json.loads(await asyncio.wait_for(proc.stdout.readline(), 60))
    await proc.wait()
    result = {
        "sessions": count,
        "cpu_pct": round(100 * cpu / wall, 1),
        "cpu_us_per_session_frame": round(1e6 * cpu / max(frames * count, 1), 3),
        "frames_relayed": relayed,
        **clock.report(),
        "dropped_overflow": sum(s.dropped_overflow for s in stats),
        "trimmed": sum(s.trimmed for s in stats),
        "underflows": sum(s.underflows for s in stats),
        "transcoded": sum(s.transcoded for s in stats),
        "phones_sent": phones["sent"],
        "phones_received": phones["received"],
        "phones_heard_audio_pct": round(100 * phones["audio"] / max(phones["received"], 1), 2),
        "phones_cpu_pct": round(phones["cpu_pct"], 1),
    }
    await engine.close()
    await asyncio.sleep(0.2)
    return result


async def micro(tmp: Path) -> dict[str, float]:
    """One inbound packet on a and one outbound frame on b, per frame: unbridged, bridged, transcoded."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind((HOST, 0))
    sink.setblocking(False)
    sink_port = sink.getsockname()[1]
    engine = MediaEngine(HOST, 39200, 39300, PromptCache(tmp))
    peer = (HOST, 40000)
    results: dict[str, float] = {}

    def drain() -> None:
        try:
            while True:
                sink.recv(2048)
        except BlockingIOError:
            pass

    for label, agent_codec in (("unbridged", "PCMU"), ("bridged", "PCMU"), ("transcoded", "PCMA")):
        a = await engine.open_session("a")
        b = await engine.open_session("b")
        a.start(negotiate(SdpSession().offer(HOST, sink_port, ("PCMU",)), HOST, a.local_port))
        b.start(negotiate(SdpSession().offer(HOST, sink_port, (agent_codec,)), HOST, b.local_port))
        engine._release(a)  # keep the clock out of the way: we call the hooks by hand
        engine._release(b)
        a._peer = peer  # latched, as after the first packet
        if label != "unbridged":
            MediaBridge(a, b).start()
        packet = build_rtp_packet(0, 1, 160, 0x1234, tone_frame("PCMU"))
        for _ in range(3):  # prime the jitter margin
            a.datagram_received(packet, peer)

        def frame(a: RtpSession = a, b: RtpSession = b, packet: bytes = packet) -> None:
            a.datagram_received(packet, peer)
            b._send_frame()

        results[f"packet_in_plus_frame_out_{label}_us"] = per_call_us(frame, 5000)
        drain()
        a.close()
        b.close()
    results["relay_overhead_us"] = round(results["packet_in_plus_frame_out_bridged_us"]
                                         - results["packet_in_plus_frame_out_unbridged_us"], 3)
    results["transcode_overhead_us"] = round(results["packet_in_plus_frame_out_transcoded_us"]
                                             - results["packet_in_plus_frame_out_unbridged_us"], 3)
    frame = tone_frame("PCMU")
    table = bytes(range(256))
    results["bytes_translate_us"] = per_call_us(lambda: frame.translate(table))
    results["ulaw_to_alaw_via_pcm_us"] = per_call_us(lambda: PCMA.encode(PCMU.decode(frame)))
    sink.close()
    await engine.close()
    return results


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(args.cache)
    results: dict[str, Any] = {
        **machine_facts(), "seconds_per_run": args.seconds, "micro_us": await micro(tmp), "load": [],
    }
    for pairs in args.pairs:
        row: dict[str, Any] = {"pairs": pairs}
        for mode in ("baseline", "bridged", "transcoded"):
            row[mode] = await load(pairs, mode, args.seconds, tmp)
        base = row["baseline"]["cpu_pct"]
        for mode in ("bridged", "transcoded"):
            r = row[mode]
            extra_cpu_s = (r["cpu_pct"] - base) / 100 * args.seconds
            r["extra_cpu_us_per_relayed_frame"] = round(1e6 * extra_cpu_s / max(r["frames_relayed"], 1), 3)
        results["load"].append(row)
        print(f"  {pairs} pairs done", file=sys.stderr)
    return results


def print_table(results: dict[str, Any]) -> None:
    print(f"\nPython {results['python']} on {results['cpus']} CPUs, {results['loop']}\n")
    print("per-frame costs (µs)")
    for name, value in results["micro_us"].items():
        print(f"  {name:44s} {value:8.3f}")
    print(f"\nload, {results['seconds_per_run']:g} s per run (phones in another process, loopback)")
    print(f"  {'pairs':>5} {'sessions':>8} {'mode':>10} {'cpu%':>6} {'µs/sess-frame':>13} {'relayed':>8} "
          f"{'µs/relayed':>10} {'late ticks':>12} {'max ms':>7} {'dropped':>7} {'trim':>5} {'under':>6} "
          f"{'heard%':>7} {'phones cpu%':>11}")
    for row in results["load"]:
        for mode in ("baseline", "bridged", "transcoded"):
            r = row[mode]
            per_relayed = r.get("extra_cpu_us_per_relayed_frame", "-")
            late = f"{r['late_ticks']} ({r['late_tick_pct']}%)"
            print(f"  {row['pairs']:>5} {r['sessions']:>8} {mode:>10} {r['cpu_pct']:>6} "
                  f"{r['cpu_us_per_session_frame']:>13} {r['frames_relayed']:>8} {per_relayed:>10} "
                  f"{late:>12} {r['max_lateness_ms']:>7} {r['dropped_overflow']:>7} {r['trimmed']:>5} "
                  f"{r['underflows']:>6} {r['phones_heard_audio_pct']:>7} {r['phones_cpu_pct']:>11}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, nargs="+", default=[250, 500])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--cache", default="/tmp/helpline-bench-prompts")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--role", choices=["engine", "endpoints"], default="engine", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.role == "endpoints":
        uvloop.run(endpoints(args.count))
        return
    results = uvloop.run(main_async(args))
    save_results(results, args.out, print_table)


if __name__ == "__main__":
    main()
