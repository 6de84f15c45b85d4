"""One command for Helpline's benchmarks, each against a bare baseline on the same machine.

1. Call setup rate (SIPp bench/scenarios/uac_ivr_hangup.xml: INVITE -> 200 -> ACK, then the server
   hangs up with BYE -> 200), rate stepped up until calls fail, retransmit (> 1 %) or the achieved
   rate falls behind: against the baseline answerer (aiosipua + uvloop, bench/baseline_answerer.py,
   which sends its BYE 300 ms after answering) and against ``helpline serve`` running
   bench/flows/bench_short.yaml (trunk -> IVR: 300 ms tone -> hangup). Same SIP messages on the
   wire for both. Reports max sustained calls/s, INVITE->200 p50/p99 (SIPp response times, whole
   ms), server CPU ms and RSS per call (from /proc).
2. Concurrent media: N G.711 streams (bench/rtp_load.py) against a bare uvloop RTP echo
   (bench/rtp_echo.py) and against Helpline IVR calls held in a long prompt
   (bench/flows/bench_long.yaml, a 120 s tone); max N at < 0.5 % late-or-lost packets.

Loopback only, bounded in time and count; run it inside scripts/in-netns::

    scripts/in-netns .venv/bin/python -m bench.run --name baseline --only baseline
    scripts/in-netns .venv/bin/python -m bench.run --quick          # < 60 s smoke run

Helpline is started with ``--helpline-cmd`` (default ``.venv/bin/helpline serve --config {config}``)
and a generated TOML config: a ``bench`` trunk from 127.0.0.0/8 whose DIDs route to the two bench
flows, ``server.flows_dir = bench/flows``, ``server.log_level = --helpline-log-level`` (warning), SQLite
under a temporary data_dir. ``--helpline-config-extra FILE`` is appended verbatim. A target that does
not start is reported as "not available" rather than failing the run. Results: a table on stdout and
bench/results/<name>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "bench" / "scenarios" / "uac_ivr_hangup.xml"
FLOWS = REPO / "bench" / "flows"
DID_SHORT = "+18005550199"  # -> bench_short: 300 ms tone, hangup
DID_LONG = "+18005550198"  # -> bench_long: 120 s tone
HANGUP_AFTER_MS = 300  # the baseline answerer's BYE, to match bench_short's prompt
RESULTS = REPO / "bench" / "results"
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
GOAL_CALLS_PER_S = 700
GOAL_CONCURRENT = 1000
LOSS_LIMIT_PCT = 0.5
QUIET_PCT = 10.0  # other processes' CPU (% of one core) below which a step may start
QUIET_WAIT_S = 90.0
_settings = {"quiet_wait_s": QUIET_WAIT_S}  # set from the command line


# -- process helpers ------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _cpu_by_pid() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, CPU seconds) for every process, kernel threads excluded."""
    out: dict[int, tuple[int, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ppid = int(fields[1])
        if ppid == 2 or entry.name == "2":  # kernel threads (softirq work for our own packets lands there)
            continue
        out[int(entry.name)] = (ppid, (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return out


def _foreign_cpu_s(before: dict[int, tuple[int, float]], after: dict[int, tuple[int, float]]) -> float:
    """CPU seconds spent between two snapshots by processes that are not this run or its children.

    The machine has 2 cores and other people run tests on it: a step that shared the CPU with them
    measures them, not us, so every step records this and waits for quiet before it starts.
    """
    parent = {pid: ppid for pid, (ppid, _) in {**before, **after}.items()}
    me = os.getpid()

    def ours(pid: int) -> bool:
        for _ in range(64):
            if pid == me:
                return True
            if pid <= 1:
                return False
            pid = parent.get(pid, 0)
        return False

    return sum(
        max(0.0, cpu - before.get(pid, (0, 0.0))[1]) for pid, (_, cpu) in after.items() if not ours(pid)
    )


def _wait_quiet() -> float:
    """Wait (bounded) until other processes use < QUIET_PCT of a core; returns the last reading."""
    deadline = time.monotonic() + _settings["quiet_wait_s"]
    warned = False
    while True:
        before = _cpu_by_pid()
        time.sleep(1.0)
        pct = 100 * _foreign_cpu_s(before, _cpu_by_pid())
        if pct < QUIET_PCT or time.monotonic() > deadline:
            if pct >= QUIET_PCT:
                print(f"    (machine still busy: other processes at {pct:.0f} % of a core)", file=sys.stderr)
            return pct
        if not warned:
            print(f"    (waiting for quiet: other processes at {pct:.0f} % of a core)", file=sys.stderr)
            warned = True


def _sip_options_answered(port: int, timeout: float) -> bool:
    """True once something answers SIP OPTIONS on 127.0.0.1:port (UDP)."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.3)
        me = sock.getsockname()[1]
        while time.monotonic() < deadline:
            msg = (
                f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKbench"
                f"{time.monotonic_ns()}\r\nMax-Forwards: 70\r\nFrom: <sip:bench@127.0.0.1>;tag=b\r\n"
                f"To: <sip:127.0.0.1:{port}>\r\nCall-ID: bench-{time.monotonic_ns()}\r\nCSeq: 1 OPTIONS\r\n"
                "Content-Length: 0\r\n\r\n"
            )
            sock.sendto(msg.encode(), ("127.0.0.1", port))
            try:
                if sock.recv(65535).startswith(b"SIP/2.0"):
                    return True
            except (TimeoutError, ConnectionRefusedError):
                time.sleep(0.2)
    return False


@contextlib.contextmanager
def _server(cmd: Sequence[str], log: Path, ready: Any, name: str) -> Iterator[subprocess.Popen[bytes] | None]:
    """Start a server process; yields None (and says why) when it does not become ready."""
    try:
        proc = subprocess.Popen(list(cmd), stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=REPO)
    except OSError as exc:
        print(f"[{name}] cannot start {cmd[0]}: {exc}", file=sys.stderr)
        yield None
        return
    try:
        if not ready() or proc.poll() is not None:
            print(f"[{name}] not available (see {log})", file=sys.stderr)
            yield None
        else:
            yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- 1. call setup rate ---------------------------------------------------------------------------


@dataclass
class RateStep:
    target_rate: int
    calls: int
    ok: int
    failed: int
    retransmissions: int
    achieved_rate: float
    p50_ms: float | None
    p99_ms: float | None
    cpu_ms_per_call: float | None
    rss_kib_after: int | None
    foreign_cpu_pct: float = 0.0

    @property
    def sustained(self) -> bool:
        return (
            self.failed == 0
            and self.ok == self.calls
            and self.retransmissions <= 0.01 * self.calls
            and self.achieved_rate >= 0.95 * self.target_rate
        )


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def sipp_load_command(port: int, did: str, rate: int, calls: int, seconds: float, *, rtt: bool) -> list[str]:
    """SIPp running bench/scenarios/uac_ivr_hangup.xml at ``rate`` calls/s (run in a copy's folder)."""
    cmd = [
        "sipp", f"127.0.0.1:{port}", "-sf", SCENARIO.name, "-s", did, "-i", "127.0.0.1", "-p", "0",
        "-r", str(rate), "-m", str(calls), "-l", str(max(100, rate * 4)), "-nostdin",
        "-trace_stat", "-stf", "stat.csv", "-fd", "1",
        "-timeout", f"{int(seconds * 3 + 20)}s", "-max_recv_loops", "10000", "-max_sched_loops", "10000",
    ]
    return [*cmd, "-trace_rtt", "-rtt_freq", "1"] if rtt else cmd


def _sipp_rate_step(port: int, rate: int, seconds: float, server_pid: int, did: str, work: Path) -> RateStep:
    calls = max(1, round(rate * seconds))
    step_dir = work / f"rate-{port}-{rate}"
    step_dir.mkdir()
    shutil.copy(SCENARIO, step_dir / SCENARIO.name)  # SIPp writes its *_rtt.csv next to the scenario
    _wait_quiet()
    snap0 = _cpu_by_pid()
    cpu0 = _cpu_seconds(server_pid)
    t0 = time.monotonic()
    cmd = sipp_load_command(port, did, rate, calls, seconds, rtt=True)
    subprocess.run(
        cmd,
        cwd=step_dir,
        stdout=subprocess.DEVNULL,
        stderr=(step_dir / "stderr.txt").open("wb"),
        check=False,
        timeout=seconds * 3 + 30,
    )
    elapsed = time.monotonic() - t0
    cpu = _cpu_seconds(server_pid) - cpu0
    foreign_pct = 100 * _foreign_cpu_s(snap0, _cpu_by_pid()) / elapsed
    rows = list(csv.DictReader((step_dir / "stat.csv").open(), delimiter=";"))
    last = rows[-1] if rows else {}
    ok = int(last.get("SuccessfulCall(C)", 0) or 0)
    failed = int(last.get("FailedCall(C)", 0) or 0)
    retrans = int(last.get("Retransmissions(C)", 0) or 0)
    rtts: list[float] = []
    for rtt_file in step_dir.glob("*_rtt.csv"):
        for row in csv.DictReader(rtt_file.open(), delimiter=";"):
            with contextlib.suppress(KeyError, ValueError):
                rtts.append(float(row["response_time_ms"]))
    # Achieved rate over the sending window (the last call still lasts ~0.3 s after its INVITE).
    active = max(0.001, elapsed - HANGUP_AFTER_MS / 1000)
    return RateStep(
        rate,
        calls,
        ok,
        failed,
        retrans,
        ok / active,
        _percentile(rtts, 0.5),
        _percentile(rtts, 0.99),
        1000 * cpu / ok if ok else None,
        _rss_kib(server_pid),
        round(foreign_pct, 1),
    )


def _rate_ladder(
    port: int, rates: Sequence[int], seconds: float, pid: int, did: str, work: Path
) -> dict[str, Any]:
    steps: list[RateStep] = []
    rss_before = _rss_kib(pid)
    for rate in rates:
        step = _sipp_rate_step(port, rate, seconds, pid, did, work)
        steps.append(step)
        print(
            f"    rate {rate:>5}/s: ok {step.ok}/{step.calls} failed {step.failed}"
            f" retrans {step.retransmissions}"
            f" achieved {step.achieved_rate:.0f}/s p50 {step.p50_ms} p99 {step.p99_ms} ms"
            f" cpu {step.cpu_ms_per_call or 0:.2f} ms/call (others {step.foreign_cpu_pct:.0f} %)",
            file=sys.stderr,
        )
        if not step.sustained:
            break
    good = [s for s in steps if s.sustained]
    best = max(good, key=lambda s: s.target_rate) if good else None
    return {
        "max_calls_per_s": best.target_rate if best else 0,
        "p50_ms": best.p50_ms if best else None,
        "p99_ms": best.p99_ms if best else None,
        "cpu_ms_per_call": best.cpu_ms_per_call if best else None,
        "rss_kib_before": rss_before,
        "rss_kib_per_call": ((steps[-1].rss_kib_after or 0) - rss_before) / sum(s.ok for s in steps)
        if any(s.ok for s in steps)
        else None,
        "steps": [dict(vars(s), sustained=s.sustained) for s in steps],
    }


# -- 2. concurrent media ------------------------------------------------------------------------------


def _rtp_load(mode: str, streams: int, seconds: float, extra: Sequence[str]) -> dict[str, Any]:
    cmd = [PY, "-m", "bench.rtp_load", mode, "--streams", str(streams), "--seconds", str(seconds), *extra]
    _wait_quiet()
    snap0 = _cpu_by_pid()
    t0 = time.monotonic()
    proc = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=seconds * 4 + 120, check=False
    )
    foreign_pct = 100 * _foreign_cpu_s(snap0, _cpu_by_pid()) / (time.monotonic() - t0)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"error": f"rtp_load exited {proc.returncode}: {proc.stderr[-500:]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    result["foreign_cpu_pct"] = round(foreign_pct, 1)
    return result


def _stream_ladder(run_one: Any, counts: Sequence[int]) -> dict[str, Any]:
    steps = []
    for n in counts:
        r = run_one(n)
        steps.append(r)
        pct = r.get("late_or_lost_pct")
        print(
            f"    {n:>5} streams: late/lost {pct if pct is None else round(pct, 3)} % "
            f"(lost {r.get('packets_lost')}, late {r.get('packets_late')}, "
            f"sender lag p99 {r.get('sender_lag_p99_ms', 0):.1f} ms, "
            f"others {r.get('foreign_cpu_pct', 0):.0f} %)",
            file=sys.stderr,
        )
        if pct is None or pct >= LOSS_LIMIT_PCT or r.get("streams_silent"):
            break
    good = [
        s for s in steps if s.get("late_or_lost_pct", 100) < LOSS_LIMIT_PCT and not s.get("streams_silent")
    ]
    return {"max_streams": max((s["streams"] for s in good), default=0), "steps": steps}


def echo_ceiling(counts: Sequence[int], seconds: float, work: Path) -> dict[str, Any]:
    port_min = 30000
    cmd = [PY, "-m", "bench.rtp_echo", "--port-min", str(port_min), "--count", str(max(counts))]
    log = work / "rtp_echo.log"

    def ready() -> bool:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if "rtp echo on" in log.read_text(errors="replace"):
                return True
            time.sleep(0.1)
        return False

    with _server(cmd, log, ready, "rtp echo") as proc:
        if proc is None:
            return {"available": False}
        return {
            "available": True,
            **_stream_ladder(lambda n: _rtp_load("echo", n, seconds, ["--port-min", str(port_min)]), counts),
        }


# -- targets ------------------------------------------------------------------------------------------


def baseline_rate(rates: Sequence[int], seconds: float, did: str, work: Path) -> dict[str, Any]:
    port = 5080
    cmd = [PY, "-m", "bench.baseline_answerer", "--port", str(port)]
    cmd += ["--hangup-after-ms", str(HANGUP_AFTER_MS)]
    with _server(cmd, work / "baseline.log", lambda: _sip_options_answered(port, 10), "baseline") as proc:
        if proc is None:
            return {"available": False}
        return {"available": True, **_rate_ladder(port, rates, seconds, proc.pid, did, work)}


def _helpline_config(work: Path, args: argparse.Namespace) -> Path:
    data = work / "helpline-data"
    data.mkdir(exist_ok=True)
    text = f"""[sip]
host = "127.0.0.1"
port = {args.helpline_port}

[http]
host = "127.0.0.1"
port = 18080

[database]
url = "sqlite+aiosqlite:///{data}/helpline.db"

[media]
rtp_port_min = 20000
rtp_port_max = 29999

[server]
data_dir = "{data}"
flows_dir = "{FLOWS}"
log_level = "{args.helpline_log_level}"

[[trunks]]
name = "bench"
sources = ["127.0.0.0/8"]
country_code = "1"
national_prefix = "1"
international_prefix = "011"
dids = {{ "{DID_SHORT}" = "bench_short", "{DID_LONG}" = "bench_long" }}
"""
    if args.helpline_config_extra:
        text += "\n" + Path(args.helpline_config_extra).read_text()
    path = work / "helpline.toml"
    path.write_text(text)
    return path


def helpline_targets(
    args: argparse.Namespace,
    rates: Sequence[int],
    counts: Sequence[int],
    seconds: float,
    media_seconds: float,
    work: Path,
) -> dict[str, Any]:
    config = _helpline_config(work, args)
    cmd = shlex.split(args.helpline_cmd.format(config=config, repo=REPO))
    out: dict[str, Any] = {}
    port = args.helpline_port
    with _server(cmd, work / "helpline.log", lambda: _sip_options_answered(port, 20), "helpline") as proc:
        if proc is None:
            return {"rate": {"available": False}, "ivr_media": {"available": False}}
        print("  helpline call rate", file=sys.stderr)
        out["rate"] = {"available": True, **_rate_ladder(port, rates, seconds, proc.pid, DID_SHORT, work)}
        print("  helpline IVR media", file=sys.stderr)
        out["ivr_media"] = {
            "available": True,
            **_stream_ladder(
                lambda n: _rtp_load(
                    "ivr", n, media_seconds, ["--sip", f"127.0.0.1:{port}", "--did", DID_LONG]
                ),
                counts,
            ),
        }
    return out


# -- report -------------------------------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def report(results: dict[str, Any]) -> str:
    base = results.get("baseline", {})
    hl = results.get("helpline", {})
    b_rate, h_rate = base.get("rate", {}), hl.get("rate", {})
    b_media, h_media = base.get("echo", {}), hl.get("ivr_media", {})

    def cell(d: dict[str, Any], key: str) -> str:
        if not d:
            return "not run"
        if not d.get("available", False):
            return "not available"
        v = d.get(key)
        return "-" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))

    rows = [
        (
            "max calls/s (sustained)",
            cell(b_rate, "max_calls_per_s"),
            cell(h_rate, "max_calls_per_s"),
            f">= {GOAL_CALLS_PER_S}",
            _ratio(h_rate.get("max_calls_per_s"), b_rate.get("max_calls_per_s")),
        ),
        ("INVITE->200 p50 ms", cell(b_rate, "p50_ms"), cell(h_rate, "p50_ms"), "", None),
        ("INVITE->200 p99 ms", cell(b_rate, "p99_ms"), cell(h_rate, "p99_ms"), "", None),
        (
            "server CPU ms/call",
            cell(b_rate, "cpu_ms_per_call"),
            cell(h_rate, "cpu_ms_per_call"),
            "",
            _ratio(h_rate.get("cpu_ms_per_call"), b_rate.get("cpu_ms_per_call")),
        ),
        ("server RSS KiB/call", cell(b_rate, "rss_kib_per_call"), cell(h_rate, "rss_kib_per_call"), "", None),
        (
            f"max streams < {LOSS_LIMIT_PCT}% late/lost",
            cell(b_media, "max_streams"),
            cell(h_media, "max_streams"),
            f">= {GOAL_CONCURRENT}",
            _ratio(h_media.get("max_streams"), b_media.get("max_streams")),
        ),
    ]
    head = f"{'metric':<32} {'baseline':>14} {'helpline':>14} {'goal':>8} {'ratio':>7}"
    lines = [head, "-" * len(head)]
    for name, b, h, goal, ratio in rows:
        lines.append(f"{name:<32} {b:>14} {h:>14} {goal:>8} {'' if ratio is None else ratio:>7}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--name", default=None, help="results file name (default: quick or full)")
    parser.add_argument("--quick", action="store_true", help="short smoke run (< 60 s)")
    parser.add_argument("--only", choices=["baseline", "helpline"], help="run one side only")
    parser.add_argument("--rates", default=None, help="comma-separated call rates to step through")
    parser.add_argument("--streams", default=None, help="comma-separated stream counts to step through")
    parser.add_argument("--step-seconds", type=float, default=None)
    parser.add_argument(
        "--helpline-cmd", default=str(REPO / ".venv/bin/helpline") + " serve --config {config}"
    )
    parser.add_argument(
        "--quiet-wait", type=float, default=QUIET_WAIT_S,
        help="seconds each step may wait for other processes to go quiet (0: do not wait)",
    )
    parser.add_argument("--helpline-port", type=int, default=5060)
    parser.add_argument(
        "--helpline-log-level", default="warning", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument("--helpline-config-extra", default=None, help="TOML appended to the generated config")
    args = parser.parse_args(argv)
    _settings["quiet_wait_s"] = args.quiet_wait
    if os.environ.get("HELPLINE_NETNS") != "1":
        print("warning: not inside scripts/in-netns; ports may clash with other work", file=sys.stderr)

    quick = args.quick
    rates = (
        [int(x) for x in args.rates.split(",")]
        if args.rates
        else ([100, 300] if quick else [250, 500, 750, 1000, 1250, 1500, 2000, 2500, 3000, 4000])
    )
    counts = (
        [int(x) for x in args.streams.split(",")]
        if args.streams
        else ([100, 300] if quick else [100, 250, 500, 1000, 1500, 2000, 2500, 3000, 4000])
    )
    seconds = args.step_seconds or (2.0 if quick else 8.0)
    media_seconds = args.step_seconds or (2.0 if quick else 10.0)
    name = args.name or ("quick" if quick else "full")

    results: dict[str, Any] = {
        "name": name,
        "quick": quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpus": os.cpu_count(),
        "nice": os.nice(0),
        "rates": rates,
        "stream_counts": counts,
    }
    with tempfile.TemporaryDirectory(prefix="helpline-bench-") as tmp:
        work = Path(tmp)
        if args.only in (None, "baseline"):
            print("baseline: aiosipua answerer call rate", file=sys.stderr)
            results["baseline"] = {"rate": baseline_rate(rates, seconds, DID_SHORT, work)}
            print("baseline: uvloop RTP echo", file=sys.stderr)
            results["baseline"]["echo"] = echo_ceiling(counts, media_seconds, work)
        if args.only in (None, "helpline"):
            print("helpline", file=sys.stderr)
            results["helpline"] = helpline_targets(args, rates, counts, seconds, media_seconds, work)
    table = report(results)
    results["table"] = table
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    print(table)
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
