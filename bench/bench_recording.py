"""Recording benchmark: what recording costs per call on one core, and whether any frame is lost.

Prints a table and writes bench/results/recording.json. Run inside a private network namespace:

    unshare -n sh -c 'ip link set lo up && exec .venv/bin/python bench/bench_recording.py'

This process (the engine: uvloop, one MediaEngine, and every thread it starts, the segment writer and
the sealing threads included) is pinned to one CPU with ``sched_setaffinity`` before numpy loads, so
"one core" is literal; the phones (bench_bridge's endpoints process, 2N UDP sockets sending a 400 Hz
PCMU tone every 20 ms) are pinned to another CPU when there is one.

For each N: N bridged pairs (caller session + agent session, MediaBridge, PCMU), measured over the same
window in two set-ups, each run ``--repeat`` times, alternating: ``bridged`` (no recording) and
``recorded`` (the same, plus one real ``Capture`` per call on the caller session's tap, DTMF scrubbing
on, 1 s segments through one real ``SegmentWriter`` into a spool directory on disk, fsync and all).
Captures are attached spread over one segment's length (calls do not all start on the same tick;
``--aligned`` attaches them all at once, the worst case: every capture cuts its segment on the same
tick). The extra CPU of ``recorded`` over ``bridged``, divided by N x seconds, is the cost per
recorded call-second.

Lost frames, per capture: engine frames elapsed while its tap was attached minus frames the capture
took, plus frames the capture took that are not in the segment files on disk after ``close``. After
each recorded run a sample of the captures is sealed as the service does it (assemble the WAV, peaks,
manifest with the segment hash chain, Ed25519 signature), in a thread, one at a time; its thread CPU
per recorded minute is what sealing costs (off the media path).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _pin_engine() -> tuple[int, int | None]:
    """Pin this process to one CPU before any library starts a thread; returns (engine, phones) CPUs."""
    cpus = sorted(os.sched_getaffinity(0))
    wanted = os.environ.get("BENCH_ENGINE_CPU")
    engine = int(wanted) if wanted is not None else cpus[0]
    os.sched_setaffinity(0, {engine})
    others = [c for c in cpus if c != engine]
    return engine, (others[0] if others else None)


ENGINE_CPU, PHONES_CPU = _pin_engine()

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import struct  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from typing import Any  # noqa: E402

import uvloop  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from bench.bench_bridge import start_endpoints, tell  # noqa: E402
from bench.bench_media import ClockWindow, machine_facts, per_call_us, save_results  # noqa: E402
from helpline.recording.assemble import assemble  # noqa: E402
from helpline.recording.capture import Capture  # noqa: E402
from helpline.recording.keys import SigningKey  # noqa: E402
from helpline.recording.manifest import build_manifest, sign_manifest  # noqa: E402
from helpline.recording.peaks import compute_peaks  # noqa: E402
from helpline.recording.spool import SegmentWriter, read_spool  # noqa: E402
from helpline.server import tune_gc  # noqa: E402
from helpline.voice import MediaBridge, MediaEngine, PromptCache, RtpSession, SdpSession, negotiate  # noqa: E402
from helpline.voice.g711 import FRAME_PCM_BYTES, FRAME_SAMPLES  # noqa: E402

HOST = "127.0.0.1"
RESULTS = REPO / "bench" / "results" / "recording.json"
PORT_BASE = 20000
SEGMENT_FRAMES = 50
STEREO_FRAME_BYTES = 2 * FRAME_PCM_BYTES
CHANNELS = [{"channel": 0, "role": "caller", "party": "+15550000000"},
            {"channel": 1, "role": "agent", "party": "agent/system: what the caller heard"}]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ---- CPU accounting -----------------------------------------------------------------------------------
def thread_cpu(native_id: int) -> float:
    """CPU seconds (user + system) of one thread of this process, from /proc (10 ms resolution)."""
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_busy(cpu: int) -> float:
    """Seconds the CPU was busy (anything but idle and iowait) since boot, from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            values = [int(v) for v in line.split()[1:]]
            return (sum(values) - values[3] - values[4]) / CLOCK_TICKS
    raise RuntimeError(f"cpu{cpu} not in /proc/stat")


def pin_process(pid: int, cpu: int) -> None:
    """Pin every thread of another process to ``cpu``."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), {cpu})


def own_threads_pinned() -> dict[str, Any]:
    """How many threads this process has and whether every one is on the engine CPU."""
    tids = [int(t) for t in os.listdir("/proc/self/task")]
    return {"threads": len(tids), "all_on_engine_cpu": all(os.sched_getaffinity(t) == {ENGINE_CPU}
                                                           for t in tids)}


# ---- one recorded call ------------------------------------------------------------------------------
@dataclass(slots=True)
class Attached:
    capture: Capture
    session: RtpSession
    from_frame: int  # engine.frames when the tap was set
    to_frame: int = 0  # engine.frames when it was removed
    kept_tap: bool = True  # the session still had this tap at the end (a tap that raises is removed)


def capture_for(spool: Path, writer: SegmentWriter, index: int) -> Capture:
    recording_id = f"bench{index:05d}"
    meta = {"recording_id": recording_id, "call_id": f"call-{index}", "caller": "+15550000000",
            "channels": CHANNELS, "started_at": datetime.now(UTC).isoformat()}
    capture = Capture(recording_id, spool / recording_id, writer, meta=meta, segment_frames=SEGMENT_FRAMES,
                      scrub_dtmf=True)
    capture.allow(caller=True, agent=True)
    return capture


def on_disk(attached: list[Attached]) -> dict[str, int]:
    """Segments and bytes in each capture's spool, against what its frame count says should be there."""
    totals = {"segments": 0, "segments_expected": 0, "frames_on_disk": 0, "frames_missing_on_disk": 0,
              "bytes": 0}
    for item in attached:
        capture = item.capture
        spooled = read_spool(capture.spool)
        sizes = [path.stat().st_size for path in spooled.segments.values()]
        frames = sum(sizes) // STEREO_FRAME_BYTES
        totals["segments"] += len(sizes)
        totals["segments_expected"] += math.ceil(capture.frames / SEGMENT_FRAMES)
        totals["frames_on_disk"] += frames
        totals["frames_missing_on_disk"] += capture.frames - frames
        totals["bytes"] += sum(p.stat().st_size for p in capture.spool.iterdir() if p.is_file())
    return totals


def seal(spool_dir: Path, out: Path, key: SigningKey) -> tuple[float, int]:
    """Seal one spooled recording as the service does (WAV, peaks, manifest, signature); returns the
    thread CPU seconds it took and the frames sealed. Runs in a thread."""
    start = time.thread_time()
    spooled = read_spool(spool_dir)
    out.mkdir(parents=True)
    assembled = assemble(spooled, out / "audio.wav")
    (out / "peaks.json").write_text(json.dumps(compute_peaks(assembled.wav), separators=(",", ":")))
    manifest = build_manifest(
        recording_id=spooled.recording_id, call_id=str(spooled.meta["call_id"]),
        created_at=datetime.now(UTC), channels=spooled.meta["channels"], segments=assembled.segments,
        audio_sha256=assembled.audio_sha256, duration_frames=assembled.frames, overlays=assembled.overlays,
        recorder="helpline bench",
    )
    manifest_bytes, signature = sign_manifest(manifest, key)
    (out / "manifest.json").write_bytes(manifest_bytes)
    (out / "manifest.sig").write_text(signature)
    return time.thread_time() - start, assembled.frames


# ---- one run ----------------------------------------------------------------------------------------
async def load(pairs: int, mode: str, args: argparse.Namespace, work: Path, key: SigningKey
               ) -> dict[str, Any]:
    """N bridged pairs fed by the phones process; ``recorded`` adds a Capture on every caller session."""
    count = 2 * pairs
    proc, ports = await start_endpoints(count)
    if PHONES_CPU is not None:
        pin_process(proc.pid, PHONES_CPU)
    engine = MediaEngine(HOST, PORT_BASE, PORT_BASE + 4 * count + 100, PromptCache(work / "prompts"),
                         media_timeout=3600)
    sessions: list[RtpSession] = []
    targets: list[tuple[int, str]] = []
    for i, port in enumerate(ports):
        session = await engine.open_session(f"{mode}-{i}")
        session.start(negotiate(SdpSession().offer(HOST, port, ("PCMU",)), HOST, session.local_port))
        sessions.append(session)
        targets.append((session.local_port, "PCMU"))
    bridges = [MediaBridge(a, b) for a, b in zip(sessions[0::2], sessions[1::2], strict=True)]
    for bridge in bridges:
        bridge.start()
    await tell(proc, json.dumps({"targets": targets}))
    await asyncio.sleep(0.5)  # latching, priming

    spool = work / "spool"
    writer = SegmentWriter(name="bench-recording-writer")
    attached: list[Attached] = []
    high_water = [0]
    if mode == "recorded":
        callers = sessions[0::2]
        batch = len(callers) if args.aligned else max(1, math.ceil(len(callers) / SEGMENT_FRAMES))
        for start in range(0, len(callers), batch):
            for i, session in enumerate(callers[start:start + batch], start):
                capture = capture_for(spool, writer, i)
                session.tap = capture.frame
                attached.append(Attached(capture, session, engine.frames))
            if start + batch < len(callers):
                await asyncio.sleep(0.02)
        pending = writer._queue

        def watch_queue() -> None:
            depth = pending.qsize()
            if depth > high_water[0]:
                high_water[0] = depth

        engine._add_frame_hook(watch_queue)
    await asyncio.sleep(args.warmup)  # first segments (directories, meta.json) and caches settle
    await tell(proc, "mark")
    high_water[0] = 0
    clock = ClockWindow(engine)
    writer_thread = writer._thread
    writer_id = writer_thread.native_id if writer_thread is not None else None
    writer0 = thread_cpu(writer_id) if writer_id is not None else 0.0
    busy0 = cpu_busy(ENGINE_CPU)
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.sleep(args.seconds)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    busy = cpu_busy(ENGINE_CPU) - busy0
    writer_cpu = thread_cpu(writer_id) - writer0 if writer_id is not None else 0.0
    frames = clock.frames
    queue_high_water = high_water[0]
    for item in attached:  # detach at once, between two ticks, like a hangup
        item.kept_tap = item.session.tap == item.capture.frame
        item.session.tap = None
        item.to_frame = engine.frames
    await tell(proc, "stop")
    assert proc.stdout is not None
    phones = json.loads(await asyncio.wait_for(proc.stdout.readline(), 60))
    await proc.wait()
    stats = [b.stats for b in bridges]
    result: dict[str, Any] = {
        "mode": mode,
        "sessions": count,
        "seconds": round(wall, 3),
        "cpu_s": round(cpu, 4),
        "cpu_pct": round(100 * cpu / wall, 1),
        "writer_thread_cpu_pct": round(100 * writer_cpu / wall, 1),
        "others_on_engine_cpu_pct": round(max(0.0, 100 * (busy - cpu) / wall), 1),
        "frames": frames,
        **clock.report(),
        "dropped_overflow": sum(s.dropped_overflow for s in stats),
        "underflows": sum(s.underflows for s in stats),
        "phones_sent": phones["sent"],
        "phones_received": phones["received"],
        "phones_heard_audio_pct": round(100 * phones["audio"] / max(phones["received"], 1), 2),
        "phones_cpu_pct": round(phones["cpu_pct"], 1),
    }
    if mode == "recorded":
        engine._remove_frame_hook(watch_queue)
        close0, close_wall0 = time.process_time(), time.monotonic()
        await asyncio.gather(*(item.capture.close() for item in attached))
        close_cpu, close_wall = time.process_time() - close0, time.monotonic() - close_wall0
        disk = await asyncio.to_thread(on_disk, attached)
        missed = sum((item.to_frame - item.from_frame) - item.capture.frames for item in attached)
        result.update({
            "captures": len(attached),
            "attach": "aligned" if args.aligned else "spread over one segment",
            "frames_captured": sum(item.capture.frames for item in attached),
            "frames_elapsed_attached": sum(item.to_frame - item.from_frame for item in attached),
            "taps_missed": missed,
            "taps_removed": sum(not item.kept_tap for item in attached),
            "captures_failed": sum(item.capture.failed for item in attached),
            **disk,
            "lost_frames": missed + disk["frames_missing_on_disk"],
            "writer_queue_high_water": queue_high_water,
            "close_all_cpu_ms": round(1000 * close_cpu, 1),
            "close_all_wall_ms": round(1000 * close_wall, 1),
        })
        result["seal"] = await seal_sample(attached[:args.seal], work / "sealed", key)
    await asyncio.to_thread(writer.close)
    await engine.close()
    await asyncio.to_thread(shutil.rmtree, spool, True)
    await asyncio.to_thread(shutil.rmtree, work / "sealed", True)
    await asyncio.sleep(0.2)
    return result


async def seal_sample(sample: list[Attached], out: Path, key: SigningKey) -> dict[str, Any]:
    """Seal each capture of the sample in a thread, one after the other, as the service does."""
    cpu_s = 0.0
    frames = 0
    wall0 = time.monotonic()
    for item in sample:
        used, sealed = await asyncio.to_thread(seal, item.capture.spool, out / item.capture.recording_id, key)
        cpu_s += used
        frames += sealed
    wall = time.monotonic() - wall0
    minutes = frames * 0.02 / 60
    return {"recordings": len(sample), "recorded_minutes": round(minutes, 3),
            "cpu_ms": round(1000 * cpu_s, 1),
            "cpu_ms_per_recorded_minute": round(1000 * cpu_s / minutes, 2) if minutes else None,
            "wall_ms_per_recorded_minute": round(1000 * wall / minutes, 2) if minutes else None}


# ---- per-frame costs --------------------------------------------------------------------------------
async def micro(work: Path) -> dict[str, float]:
    """``Capture.frame`` amortised over its segment cuts (buffer, scrub, interleave, submit), with and
    without DTMF scrubbing; the writer thread writes meanwhile, as in the load runs."""
    tone = struct.pack(f"<{FRAME_SAMPLES}h", *(round(8000 * math.sin(2 * math.pi * 400 * n / 8000))
                                               for n in range(FRAME_SAMPLES)))
    writer = SegmentWriter(name="bench-micro-writer")
    results: dict[str, float] = {}
    for label, scrub in (("capture_frame_scrubbed_us", True), ("capture_frame_unscrubbed_us", False)):
        capture = Capture(f"micro-{scrub}", work / "micro" / str(scrub), writer, meta={"call_id": "micro"},
                          segment_frames=SEGMENT_FRAMES, scrub_dtmf=scrub)
        capture.allow(caller=True, agent=True)
        results[label] = round(per_call_us(lambda c=capture: c.frame(tone, tone), 5000), 3)  # type: ignore[misc]
        await capture.close()
    await asyncio.to_thread(writer.close)
    await asyncio.to_thread(shutil.rmtree, work / "micro", True)
    return results


# ---- the whole run ----------------------------------------------------------------------------------
def summarise(pairs: int, runs: dict[str, list[dict[str, Any]]], seconds: float) -> dict[str, Any]:
    """Recorded against bridged, run by run (run i of each set-up) and on the means."""
    bridged, recorded = runs["bridged"], runs["recorded"]
    extra = [round(1e6 * (r["cpu_s"] / r["seconds"] - b["cpu_s"] / b["seconds"]) / pairs, 1)
             for b, r in zip(bridged, recorded, strict=True)]
    mean_b = sum(b["cpu_pct"] for b in bridged) / len(bridged)
    mean_r = sum(r["cpu_pct"] for r in recorded) / len(recorded)
    seal_cpu = sum(r["seal"]["cpu_ms"] for r in recorded)
    seal_minutes = sum(r["seal"]["recorded_minutes"] for r in recorded)
    lost = sum(r["lost_frames"] for r in recorded)
    # the least disturbed run of each set-up: other people's work on the same CPU only ever adds lateness
    late_b = min(b["late_ticks"] for b in bridged)
    late_r = min(r["late_ticks"] for r in recorded)
    skipped = sum(r["skipped_frames"] for r in recorded)
    return {
        "pairs": pairs,
        "extra_cpu_us_per_recorded_call_second": extra,
        "extra_cpu_us_per_recorded_call_second_mean": round(sum(extra) / len(extra), 1),
        "bridged_cpu_pct_mean": round(mean_b, 1),
        "recorded_cpu_pct_mean": round(mean_r, 1),
        "ratio_recorded_to_bridged": round(mean_r / mean_b, 3) if mean_b else None,
        "late_ticks_bridged_min": late_b,
        "late_ticks_recorded_min": late_r,
        "lost_frames": lost,
        "skipped_frames_recorded": skipped,
        "seal_cpu_ms_per_recorded_minute": round(seal_cpu / seal_minutes, 2) if seal_minutes else None,
        "holds": lost == 0 and skipped == 0 and late_r <= late_b,
        "seconds_per_run": seconds,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="helpline-bench-recording-", dir=args.spool_parent))
    key = SigningKey(Ed25519PrivateKey.generate())
    results: dict[str, Any] = {
        **machine_facts(),
        "engine_cpu": ENGINE_CPU, "phones_cpu": PHONES_CPU,
        "gc": "default" if args.default_gc else "tuned as helpline serve (gc.freeze, threshold 50000)",
        "spool_dir": str(work), "spool_fs": _filesystem(work),
        "seconds_per_run": args.seconds, "warmup_seconds": args.warmup, "repeat": args.repeat,
        "attach": "aligned" if args.aligned else "spread over one segment",
        "segment_frames": SEGMENT_FRAMES, "scrub_dtmf": True, "seal_sample": args.seal,
        "micro_us": await micro(work), "load": [],
    }
    try:
        for pairs in args.pairs:
            runs: dict[str, list[dict[str, Any]]] = {"bridged": [], "recorded": []}
            for _ in range(args.repeat):
                for mode in ("bridged", "recorded"):
                    result = await load(pairs, mode, args, work, key)
                    runs[mode].append(result)
                    print(f"  {pairs} pairs {mode}: cpu {result['cpu_pct']}%, late {result['late_ticks']}, "
                          f"lost {result.get('lost_frames', '-')}", file=sys.stderr)
            results["load"].append({"pairs": pairs, **runs, "summary": summarise(pairs, runs, args.seconds)})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["threads"] = own_threads_pinned()
    return results


def _filesystem(path: Path) -> str:
    best = ("", "?")
    for line in Path("/proc/mounts").read_text().splitlines():
        _device, mount, fstype, *_ = line.split()
        if str(path).startswith(mount) and len(mount) > len(best[0]):
            best = (mount, fstype)
    return best[1]


def print_table(results: dict[str, Any]) -> None:
    phones = "none (one CPU)" if results["phones_cpu"] is None else f"CPU {results['phones_cpu']}"
    print(f"\nPython {results['python']}, {results['loop']}, {results['cpus']} CPUs: engine pinned to CPU "
          f"{results['engine_cpu']} (all {results['threads']['threads']} threads: "
          f"{results['threads']['all_on_engine_cpu']}), phones on {phones}; gc {results['gc']}")
    print(f"spool on {results['spool_fs']} ({results['spool_dir']}), 1 s segments, DTMF scrubbing on, "
          f"captures attached {results['attach']}\n")
    print("per-frame costs (µs)")
    for name, value in results["micro_us"].items():
        print(f"  {name:34s} {value:8.3f}")
    print(f"\nload, {results['seconds_per_run']:g} s per run, {results['repeat']} runs per set-up")
    print(f"  {'pairs':>5} {'mode':>9} {'cpu%':>6} {'writer%':>7} {'others%':>7} {'late ticks':>12} "
          f"{'max ms':>7} {'skip':>4} {'lost':>5} {'captured':>9} {'segs/expected':>15} {'q hw':>5} "
          f"{'MB':>6} {'phones%':>7} {'heard%':>7}")
    for row in results["load"]:
        for run in range(results["repeat"]):
            for mode in ("bridged", "recorded"):
                r = row[mode][run]
                late = f"{r['late_ticks']} ({r['late_tick_pct']}%)"
                rec = mode == "recorded"
                segs = f"{r['segments']}/{r['segments_expected']}" if rec else "-"
                print(f"  {row['pairs']:>5} {mode:>9} {r['cpu_pct']:>6} {r['writer_thread_cpu_pct']:>7} "
                      f"{r['others_on_engine_cpu_pct']:>7} {late:>12} {r['max_lateness_ms']:>7} "
                      f"{r['skipped_frames']:>4} {r['lost_frames'] if rec else '-':>5} "
                      f"{r['frames_captured'] if rec else '-':>9} {segs:>15} "
                      f"{r['writer_queue_high_water'] if rec else '-':>5} "
                      f"{round(r['bytes'] / 1e6, 1) if rec else '-':>6} {r['phones_cpu_pct']:>7} "
                      f"{r['phones_heard_audio_pct']:>7}")
    print("\nrecorded against bridged (same run)")
    print(f"  {'pairs':>5} {'bridged cpu%':>12} {'recorded cpu%':>13} {'ratio':>6} "
          f"{'µs per rec call-s (runs)':>26} {'late min b/r':>12} {'lost':>5} {'seal ms/rec min':>15} "
          f"{'holds':>6}")
    for row in results["load"]:
        s = row["summary"]
        per_run = " / ".join(str(v) for v in s["extra_cpu_us_per_recorded_call_second"])
        late = f"{s['late_ticks_bridged_min']}/{s['late_ticks_recorded_min']}"
        print(f"  {s['pairs']:>5} {s['bridged_cpu_pct_mean']:>12} {s['recorded_cpu_pct_mean']:>13} "
              f"{s['ratio_recorded_to_bridged']:>6} {per_run:>26} {late:>12} {s['lost_frames']:>5} "
              f"{s['seal_cpu_ms_per_recorded_minute']:>15} {s['holds']!s:>6}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, nargs="+", default=[100, 250, 500])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.5,
                        help="seconds after the last capture is attached")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each set-up per N")
    parser.add_argument("--seal", type=int, default=20, help="recordings sealed after each recorded run")
    parser.add_argument("--aligned", action="store_true", help="attach every capture on the same tick")
    parser.add_argument("--default-gc", action="store_true", help="leave the GC as Python sets it")
    parser.add_argument("--spool-parent", default=None,
                        help="where the temporary spool goes (default: TMPDIR)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if not args.default_gc:
        tune_gc()
    results = uvloop.run(main_async(args))
    save_results(results, args.out, print_table)


if __name__ == "__main__":
    main()
