"""Profile ``helpline serve`` under the benchmark's loads with py-spy, and say where the time goes.

Two loads, the same as bench/run.py uses:

* ``rate``: SIPp places bench_short calls (trunk -> IVR: 300 ms tone -> hangup) at ``--rate`` calls/s.
* ``media``: bench/rtp_load.py holds ``--streams`` IVR calls in bench_long's 120 s prompt with RTP
  flowing both ways; sampling starts once every call is up.

py-spy samples the server (``--nonblocking``, so the target is never paused) and writes collapsed
stacks; this script folds them into self time per function, inclusive time per function and per
module, printed and written to bench/results/profile-<mode>.json (the raw stacks and an SVG flame
graph go next to it). Needs py-spy in the venv (``pip install py-spy``). Run it inside the netns::

    scripts/in-netns .venv/bin/python -m bench.profile rate --rate 400 --seconds 15
    scripts/in-netns .venv/bin/python -m bench.profile media --streams 500 --seconds 15
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import run

PY_SPY = Path(sys.executable).with_name("py-spy")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")
_SITE = re.compile(r".*/(?:site-packages|lib/python3\.\d+)/")


def _module_of(path: str) -> str:
    """A frame's file as a dotted module, two levels deep (``helpline.voice``, ``sqlalchemy.orm``)."""
    rel = _SITE.sub("", path)
    if "/helpline/" in rel:
        rel = "helpline/" + rel.split("/helpline/", 1)[1]
    if rel.startswith("uvloop/"):
        return "uvloop"
    parts = [p for p in rel.removesuffix(".py").split("/") if p and p != "__init__"]
    if not parts:
        return path
    if parts[0] in ("asyncio", "logging", "json", "concurrent", "threading", "selectors", "uuid",
                    "datetime", "contextvars", "ipaddress", "re", "enum", "dataclasses", "typing"):
        return f"stdlib.{parts[0]}"
    return ".".join(parts[:3] if parts[0] == "helpline" else parts[:2])


_COMPONENTS = (  # module prefix -> component; a sample goes to its innermost frame that matches
    ("helpline.store", "store (SQLAlchemy + SQLite)"),
    ("sqlalchemy", "store (SQLAlchemy + SQLite)"),
    ("aiosqlite", "store (SQLAlchemy + SQLite)"),
    ("greenlet", "store (SQLAlchemy + SQLite)"),
    ("helpline.events.metrics", "metrics (prometheus)"),
    ("prometheus_client", "metrics (prometheus)"),
    ("helpline.events", "event bus"),
    ("helpline.sbc_bridge", "SIP edge (sbc_bridge + aiosipua)"),
    ("aiosipua", "SIP edge (sbc_bridge + aiosipua)"),
    ("helpline.voice", "media (voice)"),
    ("helpline.calls", "call control (calls)"),
    ("helpline.ivr", "IVR"),
    ("helpline.logs", "logging"),
    ("stdlib.logging", "logging"),
    ("helpline.web", "HTTP"),
    ("uvicorn", "HTTP"),
    ("starlette", "HTTP"),
)


def _component(module: str) -> str | None:
    return next((name for prefix, name in _COMPONENTS if module.startswith(prefix)), None)


def _frame(raw: str) -> tuple[str, str]:
    """(function label, module) of one collapsed-stack frame."""
    m = _FRAME.match(raw)
    if not m:
        return raw, raw
    path = m["file"]
    return f"{m['func']} ({_SITE.sub('', path).split('/helpline/')[-1]})", _module_of(path)


def fold(raw_file: Path, top: int) -> dict[str, Any]:
    """Self and inclusive shares per function and module from py-spy's collapsed stacks."""
    self_fn: collections.Counter[str] = collections.Counter()
    incl_fn: collections.Counter[str] = collections.Counter()
    self_mod: collections.Counter[str] = collections.Counter()
    incl_mod: collections.Counter[str] = collections.Counter()
    by_comp: collections.Counter[str] = collections.Counter()
    total = 0
    in_threads = 0
    for line in raw_file.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        if any(f.startswith("Thread._bootstrap") for f, _ in frames[:8]):
            # Worker threads (aiosqlite, to_thread): py-spy counts them active while SQLite waits on
            # disk; their real CPU is in thread_cpu_pct. The tables are the event loop's share.
            in_threads += count
            continue
        comp = next((c for c in (_component(m) for _, m in reversed(frames)) if c), None)
        by_comp[comp or "event loop itself (uvloop C, asyncio)"] += count
        leaf_fn, leaf_mod = frames[-1]
        self_fn[leaf_fn] += count
        self_mod[leaf_mod] += count
        for fn in {f for f, _ in frames}:
            incl_fn[fn] += count
        for mod in {m for _, m in frames}:
            incl_mod[mod] += count

    loop_samples = total - in_threads

    def share(c: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(k, round(100 * v / loop_samples, 1)) for k, v in c.most_common(top)] if loop_samples else []

    return {
        "samples": total,
        "loop_samples": loop_samples,
        "worker_thread_pct": round(100 * in_threads / total, 1) if total else 0.0,
        "by_component": share(by_comp),
        "self_by_function": share(self_fn),
        "inclusive_by_function": share(incl_fn),
        "self_by_module": share(self_mod),
        "inclusive_by_module": share(incl_mod),
    }


def _thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread of ``pid`` ("<tid> <name>"): the event loop vs aiosqlite and to_thread."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "stat").read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        out[f"{task.name} {name}"] = (int(fields[11]) + int(fields[12])) / run.CLK_TCK
    return out


def _py_spy(pid: int, seconds: float, out: Path, rate: int, native: bool) -> subprocess.Popen[bytes]:
    cmd = [str(PY_SPY), "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", str(rate),
           "--format", "raw", "-o", str(out)]
    # --native needs the target paused while its native stack is read; otherwise never pause it.
    cmd += ["--native"] if native else ["--nonblocking"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _active_calls(http_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=1) as resp:
            return int(json.load(resp).get("app", {}).get("active_calls", 0))
    except (OSError, ValueError):
        return -1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=["rate", "media"])
    parser.add_argument("--rate", type=int, default=400, help="calls/s for the rate load")
    parser.add_argument("--streams", type=int, default=500, help="concurrent calls for the media load")
    parser.add_argument("--seconds", type=float, default=15.0, help="sampling time")
    parser.add_argument("--sample-rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--native", action="store_true", help="include C frames (uvloop, sqlite3)")
    parser.add_argument("--name", default=None, help="output name (default profile-<mode>)")
    args = parser.parse_args()
    if not PY_SPY.exists():
        print(f"py-spy not found at {PY_SPY}: pip install py-spy", file=sys.stderr)
        return 2
    name = args.name or f"profile-{args.mode}"
    run.RESULTS.mkdir(parents=True, exist_ok=True)
    raw = run.RESULTS / f"{name}.txt"
    svg = run.RESULTS / f"{name}.svg"
    cfg_args = argparse.Namespace(
        helpline_port=5060, helpline_log_level=args.log_level, helpline_config_extra=None
    )
    with tempfile.TemporaryDirectory(prefix="helpline-profile-") as tmp:
        work = Path(tmp)
        config = run._helpline_config(work, cfg_args)
        cmd = [str(run.REPO / ".venv/bin/helpline"), "serve", "--config", str(config)]
        ready = lambda: run._sip_options_answered(5060, 20)  # noqa: E731
        with run._server(cmd, work / "helpline.log", ready, "helpline") as proc:
            if proc is None:
                print((work / "helpline.log").read_text()[-2000:], file=sys.stderr)
                return 1
            run._wait_quiet()
            run._settings["quiet_wait_s"] = 0.0  # waited once; the load steps must not wait again
            cpu0 = run._cpu_seconds(proc.pid)
            t0 = time.monotonic()
            info: dict[str, Any] = {"mode": args.mode, "log_level": args.log_level}
            threads0 = _thread_cpu(proc.pid)
            if args.mode == "rate":
                spy = _py_spy(proc.pid, args.seconds, raw, args.sample_rate, args.native)
                step = run._sipp_rate_step(5060, args.rate, args.seconds, proc.pid, run.DID_SHORT, work)
                info["load"] = dict(vars(step), sustained=step.sustained)
                calls = step.ok
            else:
                load = subprocess.Popen(
                    [run.PY, "-m", "bench.rtp_load", "ivr", "--streams", str(args.streams),
                     "--seconds", str(args.seconds + 4), "--sip", "127.0.0.1:5060", "--did", run.DID_LONG],
                    cwd=run.REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                )
                deadline = time.monotonic() + 60
                while _active_calls(18080) < args.streams and time.monotonic() < deadline:
                    time.sleep(0.2)
                time.sleep(1.5)  # past the load's warm-up
                cpu0 = run._cpu_seconds(proc.pid)
                threads0 = _thread_cpu(proc.pid)
                t0 = time.monotonic()
                spy = _py_spy(proc.pid, args.seconds, raw, args.sample_rate, args.native)
                out, _ = load.communicate(timeout=args.seconds + 120)
                lines = [ln for ln in out.splitlines() if ln.startswith("{")]
                info["load"] = json.loads(lines[-1]) if lines else {"error": "no rtp_load result"}
                calls = 0
            spy.wait(args.seconds + 30)
            elapsed = time.monotonic() - t0
            cpu = run._cpu_seconds(proc.pid) - cpu0
            threads1 = _thread_cpu(proc.pid)
            info["thread_cpu_pct"] = {
                name: round(100 * (t - threads0.get(name, 0.0)) / elapsed, 1)
                for name, t in sorted(threads1.items(), key=lambda kv: -kv[1])
                if t - threads0.get(name, 0.0) > 0
            }
            info["server_cpu_pct"] = round(100 * cpu / elapsed, 1)
            if calls:
                info["server_cpu_ms_per_call"] = round(1000 * cpu / calls, 3)
    if not raw.exists():
        print("py-spy wrote nothing", file=sys.stderr)
        return 1
    flamegraph = shutil.which("flamegraph.pl") or shutil.which("inferno-flamegraph")
    if flamegraph:
        with svg.open("wb") as f:
            subprocess.run([flamegraph], stdin=raw.open("rb"), stdout=f, check=False)
    info["profile"] = fold(raw, args.top)
    (run.RESULTS / f"{name}.json").write_text(json.dumps(info, indent=2, default=str))
    p = info["profile"]
    print(json.dumps({k: v for k, v in info.items() if k != "profile"}, default=str))
    tables = ("by_component", "inclusive_by_module", "self_by_module", "self_by_function",
              "inclusive_by_function")
    for key in tables:
        print(f"\n{key}, % of the event loop thread's {p['loop_samples']} samples")
        for label, pct in p[key]:
            print(f"  {pct:5.1f} %  {label}")
    print(f"\nwritten {run.RESULTS / (name + '.json')} and {raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
