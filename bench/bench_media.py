"""Media engine micro-benchmark: per-frame costs and N concurrent paced sessions on loopback.

Prints a table and writes bench/results/media.json. Run inside a private network namespace:

    unshare -n sh -c 'ip link set lo up && exec .venv/bin/python bench/bench_media.py'

Load runs: this process (uvloop) runs a MediaEngine whose N sessions all play a prompt to
``python -m helpline.voice.probe`` in another process, which measures loss, inter-arrival spacing and
jitter from kernel timestamps. The same N is then sent by a bare uvloop sender (one timer, prebuilt
packets, nothing else), so the engine's figures come with a floor to compare against.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import socket
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from helpline.voice import MediaEngine, PromptCache, PromptSpec, SdpSession, negotiate  # noqa: E402
from helpline.voice.g711 import PCMU  # noqa: E402
from helpline.voice.rtp import RTP_HEADER, build_rtp_packet  # noqa: E402

HOST = "127.0.0.1"
RESULTS = REPO / "bench" / "results" / "media.json"


def per_call_us(fn: Callable[[], object], repeat: int = 20000) -> float:
    """Best-of-5 mean cost of ``fn`` in microseconds."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - start) / repeat)
    return best * 1e6


async def micro(tmp: Path) -> dict[str, float]:
    """Per-frame costs of the send and receive paths, with their building blocks for reference."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind((HOST, 0))
    sink.setblocking(False)
    sink_port = sink.getsockname()[1]
    engine = MediaEngine(HOST, 39000, 39100, PromptCache(tmp))
    session = await engine.open_session("bench")
    negotiated = negotiate(SdpSession().offer(HOST, sink_port), HOST, session.local_port)
    session.start(negotiated)
    engine._release(session)  # keep the clock out of the way: we call the hooks by hand
    tone = await engine.prompts.get(PromptSpec(tone_hz=(440.0,), duration_ms=60000))
    frames = tone.frames("PCMU")
    session._frames, session._pos = frames, 0

    def send_playing() -> None:
        session._send_frame()
        if session._frames is None:
            session._frames, session._pos = frames, 0

    def drain() -> None:
        try:
            while True:
                sink.recv(2048)
        except BlockingIOError:
            pass

    results: dict[str, float] = {}
    results["send_frame_playing_us"] = per_call_us(send_playing, 5000)
    drain()
    session.stop_playback()
    results["send_frame_silence_us"] = per_call_us(session._send_frame, 5000)
    drain()
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    packet = build_rtp_packet(0, 1, 160, 0x1234, frames[0])
    results["bare_socket_sendto_us"] = per_call_us(lambda: raw.sendto(packet, (HOST, sink_port)), 5000)
    drain()
    raw.close()
    peer = (HOST, 40000)
    session._peer = peer  # latched, as after the first packet
    results["receive_audio_packet_us"] = per_call_us(lambda: session.datagram_received(packet, peer))
    session.on_audio = lambda pcm: None
    results["receive_audio_packet_decoded_us"] = per_call_us(lambda: session.datagram_received(packet, peer))
    session.on_audio = None
    dtmf = build_rtp_packet(101, 1, 8000, 0x1234, struct.pack("!BBH", 1, 10, 160))
    results["receive_dtmf_packet_us"] = per_call_us(lambda: session.datagram_received(dtmf, peer))
    foreign = (HOST, 40002)
    results["drop_foreign_packet_us"] = per_call_us(lambda: session.datagram_received(packet, foreign))
    results["rtp_header_pack_us"] = per_call_us(lambda: RTP_HEADER.pack(0x80, 0, 1, 160, 0x1234) + frames[0])
    results["rtp_header_unpack_us"] = per_call_us(lambda: RTP_HEADER.unpack_from(packet))
    pcm = tone.pcm[:320]
    results["ulaw_encode_us"] = per_call_us(lambda: PCMU.encode(pcm))
    results["ulaw_decode_us"] = per_call_us(lambda: PCMU.decode(frames[0]))
    session.close()
    sink.close()
    await engine.close()
    return results


async def start_probe(count: int, duration: float) -> tuple[asyncio.subprocess.Process, list[int]]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "helpline.voice.probe",
        "--host",
        HOST,
        "--count",
        str(count),
        "--duration",
        str(duration),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
        limit=1 << 24,
    )
    assert proc.stdout is not None
    ports = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))["ports"]
    return proc, ports


async def probe_result(proc: asyncio.subprocess.Process, duration: float) -> dict[str, Any]:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), duration + 30)
    await proc.wait()
    report = dict(json.loads(line))
    report.pop("streams")
    return report


def summarise(report: dict[str, Any], cpu: float, wall: float, **extra: Any) -> dict[str, Any]:
    return {
        "packets": report["packets"],
        "loss_pct": round(report["loss_pct"], 4),
        "interval_mean_ms": round(report["interval_mean_ms"], 3),
        "interval_p95_ms": round(report["interval_p95_ms"], 3),
        "interval_p99_ms": round(report["interval_p99_ms"], 3),
        "interval_max_ms": round(report["interval_max_ms"], 3),
        "jitter_ms": round(report["jitter_ms_mean"], 3),
        "sender_cpu_pct": round(100 * cpu / wall, 1),
        "probe_cpu_pct": round(report["probe_cpu_pct"], 1),
        **extra,
    }


async def engine_load(count: int, seconds: float, tmp: Path) -> dict[str, Any]:
    """N engine sessions, each playing a long tone, measured by the probe."""
    proc, ports = await start_probe(count, seconds + 1.0)
    engine = MediaEngine(HOST, 20000, 20000 + 4 * count, PromptCache(tmp), media_timeout=3600)
    tone = await engine.prompts.get(PromptSpec(tone_hz=(440.0,), duration_ms=int(seconds * 1000) + 5000))
    sessions = []
    for port in ports:
        session = await engine.open_session(f"load-{port}")
        session.start(negotiate(SdpSession().offer(HOST, port), HOST, session.local_port))
        sessions.append(session)
    plays = [asyncio.ensure_future(s.play(tone, barge_in=False)) for s in sessions]
    await asyncio.sleep(0.5)
    late0, catch0, skip0 = engine.late_ticks, engine.catchup_frames, engine.skipped_frames
    cpu0, wall0, frames0 = time.process_time(), time.monotonic(), engine.frames
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    ticks = engine.frames - frames0
    for session in sessions:
        session.close()
    await asyncio.gather(*plays)
    await engine.close()
    report = await probe_result(proc, seconds)
    late = engine.late_ticks - late0
    return summarise(
        report,
        cpu,
        wall,
        late_ticks=late,
        late_tick_pct=round(100 * late / max(ticks, 1), 3),
        catchup_frames=engine.catchup_frames - catch0,
        skipped_frames=engine.skipped_frames - skip0,
        max_lateness_ms=round(engine.max_lateness * 1000, 2),
    )


async def bare_load(count: int, seconds: float) -> dict[str, Any]:
    """The floor: one uvloop timer sending prebuilt G.711 packets on a start + n*20 ms grid."""
    proc, ports = await start_probe(count, seconds + 1.0)
    loop = asyncio.get_running_loop()
    transports = []
    for _ in ports:
        transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=(HOST, 0))
        transports.append(transport)
    payload = PCMU.silence_frame
    targets = [(t, (HOST, p)) for t, p in zip(transports, ports, strict=True)]
    state = {"n": 0}
    start = time.monotonic()
    stop = asyncio.Event()

    def tick() -> None:
        due = int((time.monotonic() - start) / 0.02) + 1
        while state["n"] < due:
            n = state["n"]
            header = RTP_HEADER.pack(0x80, 0, n & 0xFFFF, (n * 160) & 0xFFFFFFFF, 0x1234)
            packet = header + payload
            for transport, addr in targets:
                transport.sendto(packet, addr)
            state["n"] = n + 1
        if not stop.is_set():
            loop.call_later(max(0.001, start + state["n"] * 0.02 - time.monotonic()), tick)

    loop.call_soon(tick)
    await asyncio.sleep(0.5)
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    stop.set()
    for transport in transports:
        transport.close()
    report = await probe_result(proc, seconds)
    return summarise(report, cpu, wall)


class ClockWindow:
    """The media clock's counters over one measured window: made at its start, ``report()`` at its end
    (late ticks, catch-up and skipped frames, worst lateness), the same for every benchmark."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.late0, self.ticks0, self.frames0 = engine.late_ticks, engine.ticks, engine.frames
        self.catch0, self.skip0 = engine.catchup_frames, engine.skipped_frames
        engine.max_lateness = 0.0

    @property
    def frames(self) -> int:
        return int(self.engine.frames - self.frames0)

    @property
    def late(self) -> int:
        return int(self.engine.late_ticks - self.late0)

    def report(self) -> dict[str, Any]:
        engine = self.engine
        return {
            "late_ticks": self.late,
            "late_tick_pct": round(100 * self.late / max(engine.ticks - self.ticks0, 1), 3),
            "catchup_frames": engine.catchup_frames - self.catch0,
            "skipped_frames": engine.skipped_frames - self.skip0,
            "max_lateness_ms": round(engine.max_lateness * 1000, 2),
        }


def save_results(results: dict[str, Any], out: Path, print_table: Callable[[dict[str, Any]], None]) -> None:
    """Print the table and write the JSON next to it (the common end of every benchmark here)."""
    print_table(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {out}")


def machine_facts() -> dict[str, Any]:
    """What a result file says about where it was measured."""
    return {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "loop": "uvloop"}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(args.cache)
    results: dict[str, Any] = {
        **machine_facts(), "seconds_per_run": args.seconds, "micro_us": await micro(tmp), "load": [],
    }
    for count in args.sessions:
        ours = await engine_load(count, args.seconds, tmp)
        floor = await bare_load(count, args.seconds)
        floor_cpu = floor["sender_cpu_pct"]
        ratio = round(ours["sender_cpu_pct"] / floor_cpu, 2) if floor_cpu else None
        results["load"].append({"sessions": count, "engine": ours, "bare_uvloop": floor, "cpu_ratio": ratio})
        print(f"  {count} sessions done", file=sys.stderr)
    return results


def print_table(results: dict[str, Any]) -> None:
    print(f"\nPython {results['python']} on {results['cpus']} CPUs, {results['loop']}\n")
    print("per-frame costs (µs)")
    for name, value in results["micro_us"].items():
        print(f"  {name:34s} {value:8.2f}")
    print(f"\nload, {results['seconds_per_run']:g} s per run (probe in another process, loopback)")
    head = (
        f"  {'sessions':>8} {'sender':>12} {'cpu%':>6} {'loss%':>7} {'mean ms':>8} {'p95 ms':>7} "
        f"{'p99 ms':>7} {'max ms':>7} {'jitter':>7} {'late ticks':>11}"
    )
    print(head)
    for row in results["load"]:
        for label in ("engine", "bare_uvloop"):
            r = row[label]
            late = f"{r['late_ticks']} ({r['late_tick_pct']}%)" if "late_ticks" in r else "-"
            print(
                f"  {row['sessions']:>8} {label:>12} {r['sender_cpu_pct']:>6} {r['loss_pct']:>7.3f} "
                f"{r['interval_mean_ms']:>8.3f} {r['interval_p95_ms']:>7.2f} {r['interval_p99_ms']:>7.2f} "
                f"{r['interval_max_ms']:>7.2f} {r['jitter_ms']:>7.3f} {late:>11}"
            )
        print(f"  {'':>8} {'cpu ratio':>12} {row['cpu_ratio']}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--cache", default="/tmp/helpline-bench-prompts")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the micro runs drop 100k foreign packets on purpose
    results = uvloop.run(main_async(args))
    save_results(results, args.out, print_table)


if __name__ == "__main__":
    main()
