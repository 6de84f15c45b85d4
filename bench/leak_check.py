"""What ``helpline serve`` keeps per call: rounds of SIPp calls against an in-process server.

The server runs in this process, on one uvloop loop, with bench/run.py's configuration (trunk
127.0.0.0/8, bench/flows, SQLite under a temp data_dir), so between rounds its containers can be
looked at directly. Each round drives ``--calls`` calls of bench/scenarios/uac_ivr_hangup.xml at
``--rate`` (INVITE -> 200 -> ACK -> 300 ms tone -> server BYE -> 200), waits until every call has
ended and the store has written everything, waits ``--settle`` seconds (default 64*T1 + 2: past every
retransmission and linger window), sends one OPTIONS (lazy pruning runs when a message arrives), and
reports:

- RSS sampled during the round and when its last call ended (what a server under continuous load
  carries), then RSS before and after ``gc.collect()`` and what that collection freed (objects only a
  reference cycle kept; ``--gc-off`` keeps the collector off during the round so this counts all of
  them, ``--cycles`` lists their types);
- the size of every per-call container we know of (edge calls, transactions, reply memory, pending
  client transactions, TCP routes, digest nonces, active calls, RTP sessions, live subscribers,
  store-sink maps, metrics' open calls and label sets, asyncio tasks);
- the gc-tracked object types whose count grew most since the previous round (``--growth``);
- with ``--tracemalloc``, the top allocation sites (by traceback) grown since the previous round.

The server's garbage collector is tuned as ``helpline serve`` tunes it (``server.tune_gc``) unless
``--default-gc`` is given.

Run it inside the network namespace (binds 127.0.0.1:5060 and 127.0.0.1:18080)::

    scripts/in-netns .venv/bin/python -m bench.leak_check --rounds 3 --calls 2000 --rate 200
    scripts/in-netns .venv/bin/python -m bench.leak_check --t1 0.05 --tracemalloc   # quicker linger
    scripts/in-netns .venv/bin/python -m bench.leak_check --rounds 1 --calls 14000 --rate 400
    scripts/in-netns .venv/bin/python -m bench.leak_check --t1 0.05 --gc-off --cycles --rounds 1

Writes bench/results/<name>.json (default leak-check).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import uvloop

from bench import run
from helpline import server
from helpline.config import load_settings
from helpline.logs import setup_logging
from helpline.sbc_bridge.transport import EdgeTcpTransport
from helpline.server import Service, start

SIP_PORT = 5060


def _rss_kib() -> int:
    return run._rss_kib(os.getpid())


def _containers(svc: Service) -> dict[str, int]:
    """Sizes of everything that holds something per call (private attributes on purpose)."""
    out: dict[str, int] = {}
    for name, uas in svc.bridge._uas.items():
        out[f"edge.{name}.calls"] = len(uas._calls)
        out[f"edge.{name}.server_txns"] = len(uas.transactions._server)
        out[f"edge.{name}.client_txns"] = len(uas.transactions._client)
        out[f"edge.{name}.pending_requests"] = len(uas.requests._pending)
        out[f"edge.{name}.reply_memory"] = len(uas.edge_transport.replies._entries)
        if isinstance(uas.edge_transport, EdgeTcpTransport):
            out["edge.tcp.routes"] = len(uas.edge_transport._routes)
            out["edge.tcp.connections"] = len(uas.edge_transport._connections)
    out["bridge.tasks"] = len(svc.bridge._tasks)
    out["bridge.digest_nonces"] = len(svc.bridge._digest._used)
    out["calls.active"] = len(svc.calls._active)
    out["media.sessions"] = len(svc.engine._sessions)
    out["media.active"] = len(svc.engine._active)
    out["prompts.memory"] = len(svc.engine.prompts._memory)
    out["bus.live"] = len(svc.bus._live)
    out["bus.sinks"] = len(svc.bus._sinks)
    out["sink.last_seq"] = len(svc.sink._last_seq)
    out["sink.pending"] = len(svc.sink._pending)
    out["sink.waiters"] = len(svc.sink._waiters)
    metrics: Any = next((s for s in svc.bus._sinks if type(s).__name__ == "MetricsSink"), None)
    if metrics is not None:
        out["metrics.open_calls"] = len(metrics._open)
        out["metrics.label_values"] = sum(
            len(v._seen) for v in vars(metrics).values() if type(v).__name__ == "BoundedLabel"
        )
        out["metrics.series"] = sum(1 for fam in metrics.registry.collect() for _ in fam.samples)
    out["asyncio.tasks"] = len(asyncio.all_tasks())
    return out


def _type_counts() -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for obj in gc.get_objects():
        t = type(obj)
        counts[f"{t.__module__}.{t.__qualname__}"] += 1
    return counts


async def _sipp(calls: int, rate: int, work: Path) -> dict[str, int]:
    """One SIPp run against the in-process server; returns its final counters."""
    step = work / f"round-{time.monotonic_ns()}"
    step.mkdir()
    shutil.copy(run.SCENARIO, step / run.SCENARIO.name)
    seconds = calls / rate
    cmd = run.sipp_load_command(SIP_PORT, run.DID_SHORT, rate, calls, seconds, rtt=False)
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        cwd=step,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(seconds * 3 + 40):
            _, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    rows = (step / "stat.csv").read_text().splitlines() if (step / "stat.csv").exists() else []
    if len(rows) < 2:
        raise RuntimeError(f"sipp wrote no statistics: {err.decode(errors='replace')[-1000:]}")
    head, last = rows[0].split(";"), rows[-1].split(";")
    stats = dict(zip(head, last, strict=False))
    return {
        key: int(stats.get(f"{key}(C)", "0") or 0)
        for key in ("SuccessfulCall", "FailedCall", "Retransmissions")
    }


async def _sample_rss(every: float, into: list[int]) -> None:
    """RSS every ``every`` seconds while a round runs (the curve the benchmark saw)."""
    while True:
        into.append(_rss_kib())
        await asyncio.sleep(every)


async def _drain(svc: Service, settle: float) -> dict[str, Any]:
    """Every call ended, every event stored, every linger window past, lazy pruning triggered.

    Returns RSS and container sizes as they were when the last call had ended, before the linger
    windows passed: what a server under continuous load carries.
    """
    async with asyncio.timeout(120):
        while svc.calls.active_count or svc.sink.pending:  # noqa: ASYNC110 - counters, no event
            await asyncio.sleep(0.1)
        await svc.sink.flush()
    ended = {"rss_kib": _rss_kib(), "containers": {k: v for k, v in _containers(svc).items() if v}}
    await asyncio.sleep(settle)
    # Lazy pruning (reply memory, transactions) runs when a message arrives: send one.
    await asyncio.to_thread(run._sip_options_answered, SIP_PORT, 5.0)
    return ended


def _collect(cycles: bool) -> tuple[int, list[tuple[str, int]]]:
    """``gc.collect()``; with ``cycles``, also the types of what it freed (only cycles kept those)."""
    if not cycles:
        return gc.collect(), []
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        found = gc.collect()
        kinds = collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    gc.collect()
    return found, kinds.most_common(60)


def _measure(
    svc: Service, previous_types: collections.Counter[str] | None, *, cycles: bool = False
) -> dict[str, Any]:
    rss_before_gc = _rss_kib()
    collected, cycle_kinds = _collect(cycles)
    snapshot: dict[str, Any] = {
        "rss_kib_before_gc": rss_before_gc,
        "gc_collected": collected,
        "gc_cycle_types": cycle_kinds,
        "rss_kib": _rss_kib(),
        "gc_counts": gc.get_count(),
        "containers": _containers(svc),
    }
    types = _type_counts()
    snapshot["_types"] = types
    snapshot["tracked_objects"] = sum(types.values())
    if previous_types is not None:
        growth = {k: types[k] - previous_types.get(k, 0) for k in types}
        snapshot["type_growth"] = sorted(((k, v) for k, v in growth.items() if v > 0), key=lambda kv: -kv[1])[
            :25
        ]
    return snapshot


def _tracemalloc_diff(prev: tracemalloc.Snapshot, cur: tracemalloc.Snapshot, top: int) -> list[str]:
    filters = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen*>")]
    stats = cur.filter_traces(filters).compare_to(prev.filter_traces(filters), "traceback")
    lines: list[str] = []
    for stat in stats[:top]:
        lines.append(f"{stat.size_diff / 1024:+.1f} KiB, {stat.count_diff:+d} blocks")
        lines.extend(f"    {line}" for line in stat.traceback.format(limit=6))
    return lines


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="helpline-leak-"))
    try:
        cfg_args = argparse.Namespace(
            helpline_port=SIP_PORT, helpline_log_level=args.log_level, helpline_config_extra=None
        )
        config = run._helpline_config(work, cfg_args)
        config.write_text(config.read_text().replace("[sip]\n", f"[sip]\ntimer_t1 = {args.t1}\n", 1))
        settings = load_settings(config)
        setup_logging(settings.server.log_level)
        settle = args.settle if args.settle is not None else 64 * args.t1 + 2
        svc = await start(settings)
        tune_gc = getattr(server, "tune_gc", None)  # what `helpline serve` does after start()
        if tune_gc is not None and not args.default_gc:
            tune_gc()
        result: dict[str, Any] = {
            "calls_per_round": args.calls,
            "rate": args.rate,
            "t1": args.t1,
            "settle_s": settle,
            "gc_threshold": gc.get_threshold(),
            "rounds": [],
        }
        try:
            print(f"warm-up: {args.warmup} calls", file=sys.stderr)
            await _sipp(args.warmup, args.rate, work)
            await _drain(svc, settle)
            if args.tracemalloc:
                tracemalloc.start(args.frames)
            base = _measure(svc, None, cycles=args.cycles)
            snap_prev = tracemalloc.take_snapshot() if args.tracemalloc else None
            prev_types = base.pop("_types")
            print(_line("base", base, None), file=sys.stderr)
            result["base"] = base
            prev = base
            for i in range(1, args.rounds + 1):
                t0 = time.monotonic()
                if args.gc_off:
                    gc.disable()
                samples: list[int] = []
                sampler = asyncio.create_task(_sample_rss(args.sample, samples))
                try:
                    sipp = await _sipp(args.calls, args.rate, work)
                finally:
                    sampler.cancel()
                at_end = await _drain(svc, settle)
                snap = _measure(svc, prev_types, cycles=args.cycles)  # before enable() can collect
                gc.enable()
                snap["at_last_call_end"] = at_end
                snap["rss_kib_during_round"] = samples
                prev_types = snap.pop("_types")
                snap["sipp"] = sipp
                snap["seconds"] = round(time.monotonic() - t0, 1)
                snap["rss_kib_per_call"] = round((snap["rss_kib"] - prev["rss_kib"]) / max(1, args.calls), 3)
                snap["rss_kib_per_call_before_gc"] = round(
                    (snap["rss_kib_before_gc"] - prev["rss_kib"]) / max(1, args.calls), 3
                )
                if args.tracemalloc and snap_prev is not None:
                    cur = tracemalloc.take_snapshot()
                    snap["tracemalloc"] = _tracemalloc_diff(snap_prev, cur, args.top)
                    snap_prev = cur
                print(_line(f"round {i}", snap, prev), file=sys.stderr)
                for name, grew in snap.get("type_growth", [])[: args.growth]:
                    print(f"      +{grew:<7} {name}", file=sys.stderr)
                for name, count in snap.get("gc_cycle_types", [])[: args.growth]:
                    print(f"      cycle garbage {count:<7} {name}", file=sys.stderr)
                for line in snap.get("tracemalloc", []):
                    print(f"      {line}", file=sys.stderr)
                result["rounds"].append(snap)
                prev = snap
        finally:
            await svc.stop()
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _line(label: str, snap: dict[str, Any], prev: dict[str, Any] | None) -> str:
    c = snap["containers"]
    nonzero = {k: v for k, v in c.items() if v}
    head = (
        f"{label}: rss {snap['rss_kib']} KiB (before gc {snap['rss_kib_before_gc']}),"
        f" gc freed {snap['gc_collected']}, gc-tracked objects {snap['tracked_objects']}"
    )
    if "at_last_call_end" in snap:
        end = snap["at_last_call_end"]
        head += f"\n    when the last call ended: rss {end['rss_kib']} KiB, {end['containers']}"
        head += f"\n    rss during the round (KiB): {snap['rss_kib_during_round']}"
    if prev is not None:
        head += (
            f", sipp {snap['sipp']}, {snap['rss_kib_per_call']:+.3f} KiB/call"
            f" ({snap['rss_kib_per_call_before_gc']:+.3f} before gc)"
        )
    return head + f"\n    containers: {nonzero}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=2000, help="calls per round")
    parser.add_argument("--rate", type=int, default=200, help="calls/s")
    parser.add_argument("--warmup", type=int, default=300, help="calls before the baseline measurement")
    parser.add_argument("--t1", type=float, default=0.5, help="SIP T1 (every linger window is 64*T1)")
    parser.add_argument("--settle", type=float, default=None, help="seconds to wait after each round")
    parser.add_argument("--sample", type=float, default=2.0, help="RSS sampling interval during a round")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--growth", type=int, default=15, help="object types to list per round")
    parser.add_argument(
        "--gc-off",
        action="store_true",
        help="no automatic collection during a round: gc_collected is then every cyclic object it left",
    )
    parser.add_argument(
        "--default-gc", action="store_true", help="skip helpline.server.tune_gc (serve applies it)"
    )
    parser.add_argument("--cycles", action="store_true", help="list the types only the cyclic GC freed")
    parser.add_argument("--tracemalloc", action="store_true", help="diff allocation sites between rounds")
    parser.add_argument("--frames", type=int, default=12, help="tracemalloc traceback depth")
    parser.add_argument("--top", type=int, default=15, help="tracemalloc sites to list per round")
    parser.add_argument("--name", default="leak-check")
    args = parser.parse_args()
    if os.environ.get("HELPLINE_NETNS") != "1":
        print("warning: not inside scripts/in-netns; ports may clash with other work", file=sys.stderr)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(_main(args))
    run.RESULTS.mkdir(parents=True, exist_ok=True)
    out = run.RESULTS / f"{args.name}.json"
    with contextlib.suppress(OSError):
        out.write_text(json.dumps(result, indent=2, default=str))
    print(f"written {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
