"""What the secure edge costs: call setup with the ``[security]`` policy off, on, and on under a flood.

Three ``helpline serve`` processes run side by side, one per set-up:

1. ``off``: ``[security] enabled = false`` (the baseline: the guard passes everything);
2. ``on``: the default policy;
3. ``on+flood``: the default policy, and during each of its steps SIPp floods its agent listener with
   REGISTERs from 127.0.0.66 (not a trunk source) at ``--flood-rate`` per second. The guard bans the
   source within tens of milliseconds of the first flood (the tests assert <= 2 s); from then on what is
   measured is the cost of the banned traffic it keeps dropping. The ban and drop counters are read
   from that server's /metrics at the end.

Each step is bench/run.py's (its helpers: SIPp bench/scenarios/uac_ivr_hangup.xml from the trunk
source 127.0.0.1, INVITE -> 200 -> ACK -> the flow's BYE; sustained at 0 failed calls, <= 1 %
retransmissions and >= 95 % of the target rate; INVITE->200 p50/p99 from SIPp's response times, whole
ms). The machine is shared, so the three set-ups are interleaved step by step (for each round, each
rate, each set-up, the set-up order rotating every round) and each figure is the median over
``--rounds``: other people's load lands on all three alike instead of on whichever ran last.

bench/run.py's config trusts all of 127.0.0.0/8 as the trunk, which would make the flooder a trusted
carrier (never banned); here the trunk is narrowed to 127.0.0.1/32. Prints a table and writes
bench/results/<name>.json::

    scripts/in-netns .venv/bin/python -m bench.bench_edge --rates 100,200,300 --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import run  # noqa: E402

FLOOD_SCENARIO = REPO / "tests" / "scenarios" / "flood_register.xml"
FLOOD_SOURCE = "127.0.0.66"


@dataclass
class Setup:
    """One server of the comparison and the steps measured against it."""

    name: str
    security: str
    flood: bool
    sip_port: int
    agent_port: int
    http_port: int
    work: Path
    pid: int = 0
    steps: dict[int, list[run.RateStep]] = field(default_factory=dict)
    flood_sent: int = 0
    flood_seconds: float = 0.0


def _config(setup: Setup, log_level: str) -> Path:
    """bench/run.py's Helpline config with this set-up's ports (SIP over TLS on an ephemeral one, so
    three servers fit), the trunk narrowed to 127.0.0.1, the agent listener and ``[security]``."""
    extra = setup.work / "extra.toml"
    agents = f'[agents]\nhost = "127.0.0.1"\nport = {setup.agent_port}\ntls_port = 0\n'
    extra.write_text(f"{agents}\n[security]\n{setup.security}\n")
    namespace = argparse.Namespace(helpline_port=setup.sip_port, helpline_config_extra=str(extra),
                                   helpline_log_level=log_level)
    path = run._helpline_config(setup.work, namespace)
    text = path.read_text()
    changed = (
        text.replace('sources = ["127.0.0.0/8"]', 'sources = ["127.0.0.1/32"]')
        .replace("port = 18080", f"port = {setup.http_port}")
        .replace(f"port = {setup.sip_port}\n", f"port = {setup.sip_port}\ntls_port = 0\n", 1)  # no clash
    )
    if changed.count("127.0.0.1/32") != 1 or "tls_port" not in changed or str(setup.http_port) not in changed:
        raise SystemExit("bench/run.py's config lacks the trunk, SIP or HTTP line this benchmark edits")
    path.write_text(changed)
    return path


def _start_flood(setup: Setup, rate: int, seconds: float, tag: str) -> subprocess.Popen[bytes]:
    cmd = [
        "sipp", f"127.0.0.1:{setup.agent_port}", "-sf", str(FLOOD_SCENARIO), "-s", "2001", "-i", FLOOD_SOURCE,
        "-p", "0", "-r", str(rate), "-m", str(int(rate * seconds)), "-l", str(rate * 2), "-nostdin",
        "-timeout", f"{int(seconds) + 60}s", "-trace_stat", "-stf", f"flood-{tag}.csv", "-fd", "1",
    ]
    return subprocess.Popen(cmd, cwd=setup.work, stdout=subprocess.DEVNULL,
                            stderr=(setup.work / f"flood-{tag}.err").open("wb"))


def _flood_sent(setup: Setup, tag: str) -> int:
    path = setup.work / f"flood-{tag}.csv"
    rows = path.read_text().splitlines() if path.exists() else []
    if len(rows) < 2:
        return 0
    last = dict(zip(rows[0].split(";"), rows[-1].split(";"), strict=False))
    return int(last.get("TotalCallCreated", "0") or 0)


def _security_metrics(http_port: int) -> dict[str, float] | str:
    """The guard's series (``helpline_security_*``) from /metrics, or why they could not be read."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError as exc:
        return f"unreadable: {exc}"
    out = {}
    for line in text.splitlines():
        match = re.match(r"^(helpline_security_\w+(?:\{[^}]*\})?) ([0-9.e+-]+)$", line)
        if match and "_created" not in match.group(1):
            out[match.group(1)] = float(match.group(2))
    return out


def measure(setup: Setup, rate: int, seconds: float, flood_rate: int, tag: str) -> run.RateStep:
    """One call-rate step against ``setup`` (flooded meanwhile when it is the flood set-up)."""
    step_dir = setup.work / tag
    step_dir.mkdir()
    flood = None
    if setup.flood:
        flood = _start_flood(setup, flood_rate, seconds * 3 + 60 + run._settings["quiet_wait_s"], tag)
        time.sleep(1.0)  # the source is banned by now (the first time: within tens of ms)
    started = time.monotonic()
    try:
        step = run._sipp_rate_step(setup.sip_port, rate, seconds, setup.pid, run.DID_SHORT, step_dir)
    finally:
        if flood is not None:
            flood.terminate()
            flood.wait(10)
            setup.flood_sent += _flood_sent(setup, tag)
            setup.flood_seconds += time.monotonic() - started + 1.0
    setup.steps.setdefault(rate, []).append(step)
    print(f"    {setup.name:<9} {rate:>4}/s: ok {step.ok}/{step.calls} failed {step.failed} retrans "
          f"{step.retransmissions} achieved {step.achieved_rate:.0f}/s p50 {step.p50_ms} p99 "
          f"{step.p99_ms} ms cpu {step.cpu_ms_per_call or 0:.2f} ms/call "
          f"(others {step.foreign_cpu_pct:.0f} %)", file=sys.stderr)
    return step


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summary(setup: Setup) -> dict[str, Any]:
    by_rate = {}
    for rate, steps in sorted(setup.steps.items()):
        by_rate[rate] = {
            "rounds": len(steps),
            "sustained_all": all(s.sustained for s in steps),
            "failed": sum(s.failed for s in steps),
            "retransmissions": sum(s.retransmissions for s in steps),
            "achieved_rate_median": _median([s.achieved_rate for s in steps]),
            "p50_ms_median": _median([s.p50_ms for s in steps]),
            "p99_ms_median": _median([s.p99_ms for s in steps]),
            "cpu_ms_per_call_median": _median([s.cpu_ms_per_call for s in steps]),
            "others_cpu_pct_median": _median([s.foreign_cpu_pct for s in steps]),
            "steps": [dict(vars(s), sustained=s.sustained) for s in steps],
        }
    sustained = [rate for rate, r in by_rate.items() if r["sustained_all"]]
    return {"max_sustained_calls_per_s": max(sustained, default=0), "by_rate": by_rate}


def report(results: dict[str, Any], rates: list[int]) -> str:
    def fmt(value: Any) -> str:
        return "-" if value is None else (f"{value:.2f}" if isinstance(value, float) else str(value))

    head = f"{'set-up':<9} {'max/s':>6} " + " ".join(f"{'p50/p99 @' + str(r):>14}" for r in rates) + \
        f" {'CPU ms/call @' + str(rates[0]):>15} {'flood req/s':>11}"
    lines = [head, "-" * len(head)]
    for name, r in results["setups"].items():
        if not r.get("available"):
            lines.append(f"{name:<9} not available")
            continue
        cells = []
        for rate in rates:
            at = r["by_rate"].get(str(rate)) or r["by_rate"].get(rate) or {}
            mark = "" if at.get("sustained_all", False) else "*"
            cells.append(f"{fmt(at.get('p50_ms_median'))}/{fmt(at.get('p99_ms_median'))}{mark}")
        first = r["by_rate"].get(rates[0], {})
        flood = r.get("flood", {}).get("achieved_rate")
        lines.append(f"{name:<9} {r['max_sustained_calls_per_s']:>6} " + " ".join(f"{c:>14}" for c in cells)
                     + f" {fmt(first.get('cpu_ms_per_call_median')):>15} {fmt(flood):>11}")
    lines.append("p50/p99: medians over the rounds of INVITE->200 ms; * = not sustained in every round")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="edge")
    parser.add_argument("--rates", default="100,200,300")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--step-seconds", type=float, default=5.0)
    parser.add_argument("--flood-rate", type=int, default=3000)
    parser.add_argument("--quiet-wait", type=float, default=10.0,
                        help="seconds each step may wait for other processes to go quiet (0: do not wait)")
    parser.add_argument("--helpline-log-level", default="warning",
                        choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    run._settings["quiet_wait_s"] = args.quiet_wait
    if os.environ.get("HELPLINE_NETNS") != "1":
        print("warning: not inside scripts/in-netns; ports may clash with other work", file=sys.stderr)
    rates = [int(x) for x in args.rates.split(",")]
    results: dict[str, Any] = {
        "name": args.name, "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "cpus": os.cpu_count(),
        "rates": rates, "rounds": args.rounds, "step_seconds": args.step_seconds,
        "flood_rate": args.flood_rate, "setups": {},
    }
    with tempfile.TemporaryDirectory(prefix="helpline-bench-edge-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        setups = [
            Setup("off", "enabled = false", False, 5160, 5170, 18180, work / "off"),
            Setup("on", "enabled = true", False, 5260, 5270, 18280, work / "on"),
            Setup("on+flood", "enabled = true", True, 5360, 5370, 18380, work / "on-flood"),
        ]
        running = []
        for setup in setups:
            setup.work.mkdir()
            config = _config(setup, args.helpline_log_level)
            cmd = [str(REPO / ".venv/bin/helpline"), "serve", "--config", str(config)]
            ready = lambda port=setup.sip_port: run._sip_options_answered(port, 20)  # noqa: E731
            proc = stack.enter_context(run._server(cmd, setup.work / "helpline.log", ready, setup.name))
            if proc is None:
                log = (setup.work / "helpline.log").read_text(errors="replace")[-1500:]
                print(log, file=sys.stderr)
                results["setups"][setup.name] = {"available": False, "log": log}
                continue
            setup.pid = proc.pid
            running.append(setup)
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}/{args.rounds}", file=sys.stderr)
            order = running[round_ % len(running):] + running[:round_ % len(running)] if running else []
            for rate in rates:
                for setup in order:
                    measure(setup, rate, args.step_seconds, args.flood_rate, f"r{round_}-{rate}")
        for setup in running:
            results["setups"][setup.name] = {"available": True, **summary(setup)}
            if setup.flood:
                results["setups"][setup.name]["flood"] = {
                    "rate": args.flood_rate, "source": FLOOD_SOURCE, "requests_sent": setup.flood_sent,
                    "achieved_rate": round(setup.flood_sent / max(setup.flood_seconds, 0.001), 1),
                    "metrics": _security_metrics(setup.http_port),
                }
    table = report(results, rates)
    results["table"] = table
    run.RESULTS.mkdir(parents=True, exist_ok=True)
    out = run.RESULTS / f"{args.name}.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    print(table)
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
