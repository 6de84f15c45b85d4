"""Queue end to end (issue 3): SIPp callers -> trunk -> IVR flow -> queue -> SIPp agents -> BYE.

One real ``helpline serve`` (temporary data dir, SQLite, ``log_level = warning``) with a trunk for
127.0.0.0/8 and two DIDs whose flows are written into the temporary dir:

* ``bench_queue``: ``enqueue`` straight into queue ``bench`` (ring timeout 5 s, ``wrapup_s = 0``);
* ``bench_answer`` (the baseline): a ``pause`` longer than any call, no queue.

Agents: ``--agents`` agents (extensions 3000..) created through ``POST /api/agents``, all members of
``bench``, registered by ONE SIPp process (bench/scenarios/queue_agent_register.xml, digest MD5 from
an injection file) whose out-of-call scenario (queue_agent_uas.xml) answers Helpline's OPTIONS and
INVITEs on the same socket (Helpline sends to the address an agent registered from) with ``-rtp_echo``,
so each agent loops the relayed caller audio back through the bridge. Then ``PUT .../presence``
ready for all.

1. Call rate: SIPp callers (bench/scenarios/queue_uac_talk.xml: INVITE, 200, ACK, ``--talk`` s, BYE)
   at each rate of ``--rates`` for ``--step-seconds``, first against the baseline DID, then against
   the queue DID (same process, same scenario). A step holds when SIPp reports every call
   successful, retransmissions <= 1 %, the achieved rate >= 95 % of the target and, for the queue,
   every call was connected to an agent: the deltas of ``helpline_queue_joined_total``,
   ``helpline_queue_offers_total{result="answered"}`` and ``helpline_queue_left_total{reason="answered"}``
   in /metrics all equal the calls placed, with no missed offer. Reports INVITE->200 p50/p99 (SIPp,
   whole ms), the queue's join -> agent-answer time (ASA and longest, ``/api/queues/bench/kpis``) and
   server CPU per call. The ladder stops at the first step that does not hold.
2. Bridged calls with RTP: for each ``--bridged`` count K, K calls placed with
   tests.support.sip_uac.SipUac whose RTP is sent and received by a separate media process (this
   module, ``--role media``): one UDP socket per call, a 20 ms PCMU frame per call every 20 ms
   carrying a (stream, frame) marker in its payload, arrivals stamped by the kernel (SO_TIMESTAMPNS).
   Path: caller -> Helpline -> agent (SIPp echo) -> Helpline -> caller. Once every call is connected,
   ``--hold`` seconds are measured: RFC 3550 interarrival jitter and sequence loss of the stream
   Helpline sends each caller (helpline.voice.probe.StreamStats), end-to-end loss of our own frames
   (markers sent and never heard back), and their round trip time. A step holds when every call
   reached an agent and both losses stay under ``--loss-limit``.

Every step also records the datagrams dropped by full receive buffers on the fixed-port sockets
(/proc/net/udp: Helpline's SIP and agent ports, the agents' SIPp and its RTP echo port; frames the
echo drops show up as end-to-end loss that is not Helpline's) and the "media clock N ms late"
warnings in the server log (the engine's late-tick counters are not in /metrics).

Run inside a private network namespace (ports are fixed: SIP 5060, agents 5070, HTTP 18081):

    scripts/in-netns .venv/bin/python -m bench.bench_queue
    scripts/in-netns .venv/bin/python -m bench.bench_queue --rates 20,50 --bridged 50 --hold 5  # quick

Results: a table on stdout and bench/results/<--name>.json (default queue.json), with the commands.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import re
import select
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.run import (  # noqa: E402  (the shared step hygiene of the benchmarks)
    _cpu_by_pid,
    _cpu_seconds,
    _foreign_cpu_s,
    _percentile,
    _settings,
    _wait_quiet,
)
from helpline.voice.probe import SO_TIMESTAMPNS, StreamStats, percentile  # noqa: E402

SCENARIOS = REPO / "bench" / "scenarios"
CALLER_SCENARIO = SCENARIOS / "queue_uac_talk.xml"
REGISTER_SCENARIO = SCENARIOS / "queue_agent_register.xml"
AGENT_SCENARIO = SCENARIOS / "queue_agent_uas.xml"
RESULTS = REPO / "bench" / "results"
PY = sys.executable

SIP_PORT, AGENT_EDGE_PORT, HTTP_PORT = 5060, 5070, 18081
AGENT_SIPP_PORT, AGENT_RTP_PORT, CALLER_RTP_PORT = 5090, 16000, 17000
DID_QUEUE, DID_ANSWER = "+18005550300", "+18005550301"
QUEUE = "bench"
FIRST_EXTENSION = 3000

FLOW_QUEUE = f"""# Queue benchmark: straight into the queue; the caller hangs up while talking to the agent.
flow:
  id: bench_queue
  version: 1
  description: Enqueue to {QUEUE}.
  entry: to_queue

nodes:
  - id: to_queue
    type: enqueue
    queue: {QUEUE}
    timeout: 60
    next:
      answered: bye
      timeout: bye
  - id: bye
    type: hangup
"""

FLOW_ANSWER = """# Queue benchmark baseline: answered by the IVR and held in silence; the caller hangs up.
flow:
  id: bench_answer
  version: 1
  description: Silence longer than any call, no queue.
  entry: wait

nodes:
  - id: wait
    type: pause
    ms: 120000
    next: bye
  - id: bye
    type: hangup
"""

# Marker of our own frames inside the PCMU payload (pass-through on a PCMU-PCMU bridge).
MAGIC = b"HLQB"
MARK = struct.Struct("!4sII")  # magic, stream index, frame number
RTP = struct.Struct("!BBHII")
FRAME_S = 0.020
SILENCE = b"\xff" * 160
TAIL_FRAMES = 25  # frames sent in the last 0.5 s before stop are not counted as lost


# -- Helpline: config, process, API ---------------------------------------------------------------


def write_setup(work: Path, log_level: str) -> Path:
    """Write the two flows and the TOML config into ``work``; returns the config path."""
    flows = work / "flows"
    flows.mkdir()
    (flows / "bench_queue.yaml").write_text(FLOW_QUEUE)
    (flows / "bench_answer.yaml").write_text(FLOW_ANSWER)
    data = work / "data"
    data.mkdir()
    config = work / "helpline.toml"
    config.write_text(f"""[server]
data_dir = "{data}"
flows_dir = "{flows}"
log_level = "{log_level}"

[http]
host = "127.0.0.1"
port = {HTTP_PORT}

[sip]
host = "127.0.0.1"
port = {SIP_PORT}

[media]
host = "127.0.0.1"
rtp_port_min = 20000
rtp_port_max = 29999
media_timeout_s = 30

[agents]
host = "127.0.0.1"
port = {AGENT_EDGE_PORT}
min_expires = 10
qualify_interval_s = 600
digest_algorithms = ["MD5"]  # SIPp 3.6 computes MD5 digests only

[queues.{QUEUE}]
ring_timeout_s = 5
wrapup_s = 0
announcements = {{ first_after_s = 3600, every_s = 3600 }}

[[trunks]]
name = "bench"
sources = ["127.0.0.0/8"]
country_code = "1"
national_prefix = "1"
international_prefix = "011"
dids = {{ "{DID_QUEUE}" = "bench_queue", "{DID_ANSWER}" = "bench_answer" }}
""")
    return config


@dataclass
class Helpline:
    """A running ``helpline serve`` and its HTTP API."""

    proc: subprocess.Popen[bytes]
    log: Path
    api: str = f"http://127.0.0.1:{HTTP_PORT}"

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(self.api + path, params=params, timeout=10)
        response.raise_for_status()
        return response.json()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics, keyed by (name, sorted labels)."""
        text = httpx.get(self.api + "/metrics", timeout=10).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def queue_counts(self) -> dict[str, Any]:
        view: dict[str, Any] = self.get(f"/api/queues/{QUEUE}")
        return dict(view.get("counts", {}))


@contextlib.contextmanager
def helpline(work: Path, cmd: Sequence[str]) -> Iterator[Helpline]:
    """Start ``helpline serve`` and wait for /healthz (30 s); SIGTERM at the end."""
    log = work / "helpline.log"
    proc = subprocess.Popen(list(cmd), stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=REPO)
    server = Helpline(proc, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"helpline serve exited {proc.returncode}: {log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(server.api + "/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"helpline serve not healthy in 30 s: {log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def metric_delta(
    before: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    after: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    name: str,
    **labels: str,
) -> float:
    """Sum over the samples of ``name`` whose labels include ``labels``: after - before."""

    def total(m: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
        return sum(
            v
            for (n, lbl), v in m.items()
            if n == name and all(dict(lbl).get(k) == x for k, x in labels.items())
        )

    return total(after) - total(before)


def by_label(
    before: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    after: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    name: str,
    label: str,
) -> dict[str, int]:
    """Deltas of ``name`` (queue ``bench`` only) per value of ``label``, zeros left out."""
    values = {dict(lbl).get(label, "") for (n, lbl) in after if n == name and dict(lbl).get("queue") == QUEUE}
    out = {v: round(metric_delta(before, after, name, queue=QUEUE, **{label: v})) for v in values}
    return {k: v for k, v in out.items() if v}


# -- agents ---------------------------------------------------------------------------------------


async def _create_agents(api: str, count: int) -> list[tuple[str, str]]:
    sem = asyncio.Semaphore(16)
    agents = [(str(FIRST_EXTENSION + i), f"pw-{FIRST_EXTENSION + i}-bench") for i in range(count)]
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:

        async def one(ext: str, password: str) -> None:
            body = {
                "extension": ext,
                "display_name": f"Bench {ext}",
                "password": password,
                "skills": {},
                "queues": [{"queue": QUEUE}],
            }
            async with sem:
                response = await client.post("/api/agents", json=body)
            if response.status_code != 201:
                raise RuntimeError(f"POST /api/agents {ext}: {response.status_code} {response.text}")

        await asyncio.gather(*(one(e, p) for e, p in agents))
    return agents


async def _set_presence(api: str, extensions: Sequence[str], presence: str) -> None:
    sem = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:

        async def one(ext: str) -> None:
            async with sem:
                response = await client.put(f"/api/agents/{ext}/presence", json={"presence": presence})
            if response.status_code != 200:
                raise RuntimeError(f"PUT /api/agents/{ext}/presence: {response.status_code} {response.text}")

        await asyncio.gather(*(one(e) for e in extensions))


def agent_sipp_command(count: int, inf: Path) -> list[str]:
    """One SIPp registering ``count`` agents and answering for all of them (run in its own folder)."""
    return [
        "sipp",
        f"127.0.0.1:{AGENT_EDGE_PORT}",
        "-sf",
        REGISTER_SCENARIO.name,
        "-oocsf",
        AGENT_SCENARIO.name,
        "-inf",
        inf.name,
        "-i",
        "127.0.0.1",
        "-p",
        str(AGENT_SIPP_PORT),
        "-mi",
        "127.0.0.1",
        "-mp",
        str(AGENT_RTP_PORT),
        "-rtp_echo",
        "-key",
        "expires",
        "3600",
        "-r",
        "200",
        "-m",
        str(count),
        "-l",
        str(count + 10),
        "-nostdin",
        "-trace_err",
        "-error_file",
        "errors.log",
        "-trace_stat",
        "-stf",
        "stat.csv",
        "-fd",
        "1",
        "-max_recv_loops",
        "10000",
        "-max_sched_loops",
        "10000",
    ]


@contextlib.contextmanager
def agents_online(server: Helpline, count: int, work: Path) -> Iterator[dict[str, Any]]:
    """Create, register and ready ``count`` agents; yields what it took. Stops their SIPp at the end."""
    t0 = time.monotonic()
    agents = asyncio.run(_create_agents(server.api, count))
    created_s = time.monotonic() - t0
    folder = work / "agents"
    folder.mkdir()
    for scenario in (REGISTER_SCENARIO, AGENT_SCENARIO):
        shutil.copy(scenario, folder / scenario.name)
    inf = folder / "agents.csv"
    inf.write_text(
        "SEQUENTIAL\n"
        + "".join(f"{ext};[authentication username={ext} password={pw}]\n" for ext, pw in agents)
    )
    cmd = agent_sipp_command(count, inf)
    proc = subprocess.Popen(
        cmd, cwd=folder, stdout=subprocess.DEVNULL, stderr=(folder / "stderr.txt").open("wb")
    )
    try:
        extensions = [ext for ext, _ in agents]
        deadline = time.monotonic() + 60
        reachable = 0
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"agent SIPp exited {proc.returncode}: {(folder / 'stderr.txt').read_text()}"
                )
            items = server.get("/api/agents", limit=count + 10)["items"]
            reachable = sum(1 for a in items if (a.get("live") or {}).get("reachable"))
            if reachable >= count:
                break
            time.sleep(0.5)
        if reachable < count:
            raise RuntimeError(
                f"only {reachable}/{count} agents registered and answered OPTIONS in 60 s (see {folder})"
            )
        registered_s = time.monotonic() - t0 - created_s
        asyncio.run(_set_presence(server.api, extensions, "ready"))
        deadline = time.monotonic() + 30
        while server.queue_counts().get("routable", 0) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"queue {QUEUE} never had {count} routable agents: {server.queue_counts()}"
                )
            time.sleep(0.3)
        yield {
            "agents": count,
            "create_s": round(created_s, 2),
            "register_s": round(registered_s, 2),
            "command": shlex.join(cmd),
            "sipp_pid": proc.pid,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


WATCHED_PORTS = {
    "helpline_sip": SIP_PORT,
    "helpline_agents": AGENT_EDGE_PORT,
    "agents_sipp": AGENT_SIPP_PORT,
    "agents_rtp_echo": AGENT_RTP_PORT,
}


def udp_drops() -> dict[str, int]:
    """Datagrams dropped (full receive buffer) by the fixed-port sockets, from /proc/net/udp.

    Per socket, so the callers' SIPp media port, which nobody reads, does not count.
    """
    by_port: dict[int, int] = {}
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        port = int(fields[1].rsplit(":", 1)[1], 16)
        by_port[port] = by_port.get(port, 0) + int(fields[-1])
    return {name: by_port.get(port, 0) for name, port in WATCHED_PORTS.items()}


def udp_delta(before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in udp_drops().items() if v - before.get(k, 0)}


def idle_cpu_pct(server: Helpline, seconds: float = 5.0) -> float:
    """Server CPU (% of a core) with every agent ready and no call: the floor each step pays."""
    cpu0, t0 = _cpu_seconds(server.proc.pid), time.monotonic()
    time.sleep(seconds)
    return round(100 * (_cpu_seconds(server.proc.pid) - cpu0) / (time.monotonic() - t0), 1)


def wait_settled(server: Helpline, timeout: float = 30.0) -> bool:
    """Until no call is active and the queue is empty with every agent routable again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = server.metrics()
        active = m.get(("helpline_calls_active", ()), 0.0)
        counts = server.queue_counts()
        if (
            active == 0
            and counts.get("waiting", 0) == 0
            and counts.get("offering", 0) == 0
            and counts.get("routable", 0) >= counts.get("staffed", 0)
        ):
            return True
        time.sleep(0.3)
    return False


# -- 1. call rate ---------------------------------------------------------------------------------


@dataclass
class RateStep:
    target: str
    target_rate: int
    calls: int
    ok: int
    failed: int
    retransmissions: int
    achieved_rate: float
    p50_ms: float | None
    p99_ms: float | None
    cpu_ms_per_call: float | None
    foreign_cpu_pct: float
    joined: int = 0
    connected: int = 0
    left: dict[str, int] | None = None
    offers: dict[str, int] | None = None
    asa_ms: float | None = None
    longest_wait_ms: float | None = None
    settled: bool = True
    command: str = ""
    sipp_killed: bool = False
    server_log: dict[str, Any] | None = None
    udp_drops: dict[str, int] | None = None

    @property
    def all_connected(self) -> bool:
        if self.target == "baseline":
            return True
        return (
            self.joined == self.calls
            and self.connected == self.calls
            and (self.left or {}) == {"answered": self.calls}
            and (self.offers or {}) == {"answered": self.calls}
        )

    @property
    def sustained(self) -> bool:
        return (
            self.failed == 0
            and not self.sipp_killed
            and self.ok == self.calls
            and self.retransmissions <= 0.01 * self.calls
            and self.achieved_rate >= 0.95 * self.target_rate
            and self.all_connected
        )


def caller_sipp_command(did: str, rate: int, calls: int, talk_s: float) -> list[str]:
    """SIPp callers for one step (run in a folder holding a copy of the scenario)."""
    return [
        "sipp",
        f"127.0.0.1:{SIP_PORT}",
        "-sf",
        CALLER_SCENARIO.name,
        "-s",
        did,
        "-i",
        "127.0.0.1",
        "-p",
        "0",
        "-mi",
        "127.0.0.1",
        "-mp",
        str(CALLER_RTP_PORT),
        "-d",
        str(round(talk_s * 1000)),
        "-r",
        str(rate),
        "-m",
        str(calls),
        "-l",
        str(max(100, round(rate * (talk_s + 5)))),
        "-nostdin",
        "-trace_stat",
        "-stf",
        "stat.csv",
        "-fd",
        "1",
        "-trace_err",
        "-error_file",
        "errors.log",
        "-trace_rtt",
        "-rtt_freq",
        "1",
        "-timeout",
        f"{round(calls / rate + talk_s + 60)}s",
        "-max_recv_loops",
        "10000",
        "-max_sched_loops",
        "10000",
    ]


def rate_step(
    server: Helpline, target: str, did: str, rate: int, args: argparse.Namespace, work: Path
) -> RateStep:
    calls = max(1, round(rate * args.step_seconds))
    folder = work / f"rate-{target}-{rate}"
    folder.mkdir()
    shutil.copy(CALLER_SCENARIO, folder / CALLER_SCENARIO.name)  # SIPp writes *_rtt.csv beside it
    cmd = caller_sipp_command(did, rate, calls, args.talk)
    _wait_quiet()
    m0 = server.metrics()
    snap0 = _cpu_by_pid()
    cpu0 = _cpu_seconds(server.proc.pid)
    since = time.time()
    t0 = time.monotonic()
    log_mark = server.log.stat().st_size
    udp0 = udp_drops()
    timed_out = False
    try:
        subprocess.run(
            cmd,
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=(folder / "stderr.txt").open("wb"),
            check=False,
            timeout=calls / rate + args.talk + 90,
        )
    except subprocess.TimeoutExpired:  # subprocess.run killed it; the stats so far still count
        timed_out = True
    elapsed = time.monotonic() - t0
    cpu = _cpu_seconds(server.proc.pid) - cpu0
    foreign = 100 * _foreign_cpu_s(snap0, _cpu_by_pid()) / elapsed
    settled = wait_settled(server)
    m1 = server.metrics()
    rows = list(csv.DictReader((folder / "stat.csv").open(), delimiter=";"))
    last = rows[-1] if rows else {}
    rtts: list[float] = []
    answered_at: list[float] = []
    for rtt_file in folder.glob("*_rtt.csv"):
        for row in csv.DictReader(rtt_file.open(), delimiter=";"):
            with contextlib.suppress(KeyError, ValueError):
                rtts.append(float(row["response_time_ms"]))
                answered_at.append(float(row["Date_ms"]))
    ok = int(last.get("SuccessfulCall(C)", 0) or 0)
    # Achieved rate: 200s received per second over the sending window (SIPp's start-up excluded).
    span_s = (max(answered_at) - min(answered_at)) / 1000 if len(answered_at) > 1 else 0.0
    achieved = (len(answered_at) - 1) / span_s if span_s > 0 else float(ok)
    step = RateStep(
        target=target,
        target_rate=rate,
        calls=calls,
        ok=ok,
        failed=int(last.get("FailedCall(C)", 0) or 0),
        retransmissions=int(last.get("Retransmissions(C)", 0) or 0),
        achieved_rate=round(achieved, 1),
        p50_ms=_percentile(rtts, 0.5),
        p99_ms=_percentile(rtts, 0.99),
        cpu_ms_per_call=round(1000 * cpu / ok, 3) if ok else None,
        foreign_cpu_pct=round(foreign, 1),
        settled=settled,
        command=shlex.join(cmd),
        sipp_killed=timed_out,
        server_log=log_summary(server.log, log_mark),
        udp_drops=udp_delta(udp0),
    )
    if target == "queue":
        step.joined = round(metric_delta(m0, m1, "helpline_queue_joined_total", queue=QUEUE))
        step.offers = by_label(m0, m1, "helpline_queue_offers_total", "result")
        step.left = by_label(m0, m1, "helpline_queue_left_total", "reason")
        step.connected = round(metric_delta(m0, m1, "helpline_queue_wait_seconds_count", queue=QUEUE))
        until = time.time() + 1
        time.sleep(1.0)  # the store writes events in batches
        with contextlib.suppress(httpx.HTTPError):
            kpis = server.get(f"/api/queues/{QUEUE}/kpis", since=_iso(since), until=_iso(until))["kpis"]
            per_queue = (kpis.get("queues") or {}).get(QUEUE) or kpis.get("total") or {}
            if per_queue.get("asa_s") is not None:
                step.asa_ms = round(1000 * per_queue["asa_s"], 1)
            if per_queue.get("longest_wait_s") is not None:
                step.longest_wait_ms = round(1000 * per_queue["longest_wait_s"], 1)
    print(
        f"    {target:>8} {rate:>4}/s: ok {step.ok}/{calls} failed {step.failed}"
        f" retrans {step.retransmissions}"
        f" achieved {step.achieved_rate:.0f}/s INVITE->200 p50 {step.p50_ms} p99 {step.p99_ms} ms"
        f" cpu {step.cpu_ms_per_call} ms/call"
        + (
            f" joined {step.joined} connected {step.connected} offers {step.offers} left {step.left}"
            f" ASA {step.asa_ms} ms longest {step.longest_wait_ms} ms"
            if target == "queue"
            else ""
        )
        + f" clock stalls {(step.server_log or {}).get('clock_stalls')} udp drops {step.udp_drops}"
        + f" (others {step.foreign_cpu_pct:.0f} %){'' if settled else ' NOT SETTLED'}"
        + (" SIPP KILLED" if timed_out else ""),
        file=sys.stderr,
    )
    return step


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}+00:00"


def rate_ladder(
    server: Helpline, target: str, did: str, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    steps: list[RateStep] = []
    for rate in args.rates:
        step = rate_step(server, target, did, rate, args, work)
        steps.append(step)
        if not step.sustained:
            break
    good = [s for s in steps if s.sustained]
    best = max(good, key=lambda s: s.target_rate) if good else None
    return {
        "max_calls_per_s": best.target_rate if best else 0,
        "p50_ms": best.p50_ms if best else None,
        "p99_ms": best.p99_ms if best else None,
        "cpu_ms_per_call": best.cpu_ms_per_call if best else None,
        "asa_ms": best.asa_ms if best else None,
        "longest_wait_ms": best.longest_wait_ms if best else None,
        "steps": [dict(asdict(s), sustained=s.sustained, all_connected=s.all_connected) for s in steps],
    }


# -- 2. bridged calls with RTP: the media process ---------------------------------------------------


def _arrival(ancdata: list[tuple[int, int, bytes]]) -> float:
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= 16:
            sec, nsec = struct.unpack_from("@qq", payload)
            return float(sec + nsec / 1e9)
    return time.time()


def media_role(count: int) -> None:
    """The callers' RTP: ``count`` sockets; paced marked PCMU out, kernel-stamped arrivals in.

    Protocol on stdin/stdout (JSON lines): prints ``{"ports"}``; reads ``{"targets": [[host, port]|null]}``
    and starts sending; ``mark`` starts the measurement; ``stop`` prints the report and exits.
    """
    socks = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        if SO_TIMESTAMPNS is not None:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        socks.append(sock)
    print(json.dumps({"ports": [s.getsockname()[1] for s in socks]}), flush=True)
    targets = [tuple(t) if t else None for t in json.loads(sys.stdin.readline())["targets"]]
    by_fd = {s.fileno(): i for i, s in enumerate(socks)}
    poller = select.epoll()
    for fd in by_fd:
        poller.register(fd, select.EPOLLIN)
    stdin_fd = sys.stdin.fileno()
    poller.register(stdin_fd, select.EPOLLIN | select.EPOLLHUP)
    ssrc = [0x51000000 + i for i in range(count)]
    stats = [StreamStats() for _ in range(count)]
    heard: list[set[int]] = [set() for _ in range(count)]
    rtts: list[float] = []
    filler = [0] * count
    foreign = [0] * count
    sent_at: dict[int, float] = {}
    lags: list[float] = []
    measuring = False
    mark_n = stop_n = 0
    n = 0
    start = time.monotonic()
    buf = b""
    cpu0, wall0 = time.process_time(), time.monotonic()
    done = False
    while not done:
        now = time.monotonic()
        due = start + n * FRAME_S
        if now >= due:
            lags.append(now - due)
            sent_at[n] = time.time()
            for i, (sock, target) in enumerate(zip(socks, targets, strict=True)):
                if target is None:
                    continue
                payload = MARK.pack(MAGIC, i, n) + SILENCE[MARK.size :]
                with contextlib.suppress(OSError):
                    sock.sendto(
                        RTP.pack(0x80, 0, n & 0xFFFF, (n * 160) & 0xFFFFFFFF, ssrc[i]) + payload, target
                    )
            n += 1
            continue
        for fd, _ in poller.poll(max(0.0, start + n * FRAME_S - time.monotonic())):
            if fd == stdin_fd:
                chunk = os.read(stdin_fd, 4096)
                buf += chunk
                while b"\n" in buf:
                    line, _, buf = buf.partition(b"\n")
                    if line.strip() == b"mark" and not measuring:
                        measuring, mark_n = True, n
                        cpu0, wall0 = time.process_time(), time.monotonic()
                        lags.clear()
                    elif line.strip() == b"stop":
                        done = True
                if not chunk:  # the driver went away
                    done = True
                stop_n = n
                continue
            i = by_fd[fd]
            while True:
                try:
                    data, anc, _, _ = socks[i].recvmsg(2048, 64)
                except BlockingIOError:
                    break
                if not measuring:
                    continue
                arrival = _arrival(anc)
                stats[i].add(data, arrival, "helpline")
                magic, stream, frame = (
                    MARK.unpack_from(data, RTP.size) if len(data) >= RTP.size + MARK.size else (b"", 0, 0)
                )
                if magic != MAGIC:
                    filler[i] += 1
                elif stream != i:
                    foreign[i] += 1
                else:
                    heard[i].add(frame)
                    if frame in sent_at:
                        rtts.append(arrival - sent_at[frame])
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    counted = range(mark_n, max(mark_n, stop_n - TAIL_FRAMES))
    streams = []
    for i in range(count):
        if targets[i] is None:
            continue
        summary = stats[i].summary()
        missing = sum(1 for f in counted if f not in heard[i])
        streams.append(
            {
                "packets": summary["packets"],
                "seq_lost": summary["lost"],
                "expected": summary["expected"],
                "jitter_ms": summary["jitter_ms"],
                "interval_p99_ms": summary["interval_p99_ms"],
                "interval_max_ms": summary["interval_max_ms"],
                "frames_sent": len(counted),
                "frames_missing": missing,
                "filler": filler[i],
                "foreign": foreign[i],
            }
        )
    report = {
        "streams": streams,
        "rtt_ms_p50": 1000 * percentile(rtts, 0.5),
        "rtt_ms_p99": 1000 * percentile(rtts, 0.99),
        "rtt_ms_max": 1000 * max(rtts, default=0.0),
        "sender_lag_p99_ms": 1000 * percentile(lags, 0.99),
        "sender_lag_max_ms": 1000 * max(lags, default=0.0),
        "media_cpu_pct": 100 * cpu / wall if wall else 0.0,
    }
    print(json.dumps(report), flush=True)


# -- 2. bridged calls with RTP: the driver ----------------------------------------------------------


async def _bridged_step(server: Helpline, count: int, args: argparse.Namespace) -> dict[str, Any]:
    from tests.support.rtp_probe import make_sdp_offer
    from tests.support.sip_uac import SipUac, UacCall

    media = await asyncio.create_subprocess_exec(
        PY,
        "-m",
        "bench.bench_queue",
        "--role",
        "media",
        "--count",
        str(count),
        cwd=REPO,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=1 << 24,
    )
    assert media.stdin is not None and media.stdout is not None
    ports = json.loads(await asyncio.wait_for(media.stdout.readline(), 30))["ports"]
    m0 = await asyncio.to_thread(server.metrics)
    uac = await SipUac.open()
    sem = asyncio.Semaphore(args.setup_parallel)

    async def place(port: int) -> UacCall:
        async with sem:
            return await uac.invite(f"sip:{DID_QUEUE}@127.0.0.1:{SIP_PORT}", make_sdp_offer(port), timeout=10)

    t0 = time.monotonic()
    calls = await asyncio.gather(*(place(p) for p in ports))
    setup_s = time.monotonic() - t0
    up = [c.status == 200 and c.media is not None for c in calls]
    setups = [1000 * (c.answered_at - c.invite_sent_at) for c in calls if c.answered_at is not None]
    targets = [
        [c.media.host, c.media.port] if ok and c.media is not None else None
        for c, ok in zip(calls, up, strict=True)
    ]
    media.stdin.write(json.dumps({"targets": targets}).encode() + b"\n")
    await media.stdin.drain()
    # every call connected to an agent?
    deadline = time.monotonic() + 30
    connected = 0
    while time.monotonic() < deadline:
        m = await asyncio.to_thread(server.metrics)
        connected = round(metric_delta(m0, m, "helpline_queue_offers_total", queue=QUEUE, result="answered"))
        if connected >= sum(up):
            break
        await asyncio.sleep(0.2)
    connect_s = time.monotonic() - t0
    await asyncio.sleep(1.0)  # the bridges' jitter queues fill, latching settles
    others_before = await asyncio.to_thread(_wait_quiet)
    log_mark = server.log.stat().st_size
    udp0 = udp_drops()
    snap0 = _cpu_by_pid()
    cpu0 = _cpu_seconds(server.proc.pid)
    wall0 = time.monotonic()
    media.stdin.write(b"mark\n")
    await media.stdin.drain()
    await asyncio.sleep(args.hold)
    media.stdin.write(b"stop\n")
    await media.stdin.drain()
    wall = time.monotonic() - wall0
    server_cpu_pct = 100 * (_cpu_seconds(server.proc.pid) - cpu0) / wall
    foreign = 100 * _foreign_cpu_s(snap0, _cpu_by_pid()) / wall
    report = json.loads(await asyncio.wait_for(media.stdout.readline(), 60))
    await media.wait()
    byes = await asyncio.gather(*(c.bye(timeout=8) for c, ok in zip(calls, up, strict=True) if ok))
    uac.close()
    settled = await asyncio.to_thread(wait_settled, server)
    m1 = await asyncio.to_thread(server.metrics)
    streams = report.pop("streams")
    sent = sum(s["frames_sent"] for s in streams)
    missing = sum(s["frames_missing"] for s in streams)
    expected = sum(s["expected"] for s in streams)
    seq_lost = sum(s["seq_lost"] for s in streams)
    jitters = sorted(s["jitter_ms"] for s in streams)
    result = {
        "calls": count,
        "calls_up": sum(up),
        "connected_to_agent": connected,
        "setup_s_all": round(setup_s, 2),
        "connect_s_all": round(connect_s, 2),
        "invite_200_ms_p50": _percentile(setups, 0.5),
        "invite_200_ms_p99": _percentile(setups, 0.99),
        "hold_s": args.hold,
        "frames_sent": sent,
        "frames_missing": missing,
        "e2e_loss_pct": round(100 * missing / sent, 4) if sent else None,
        "seq_expected": expected,
        "seq_lost": seq_lost,
        "seq_loss_pct": round(100 * seq_lost / expected, 4) if expected else None,
        "filler_packets": sum(s["filler"] for s in streams),
        "foreign_packets": sum(s["foreign"] for s in streams),
        "streams_silent": sum(1 for s in streams if s["packets"] == 0),
        "jitter_ms_mean": round(sum(jitters) / len(jitters), 3) if jitters else None,
        "jitter_ms_p95_stream": round(percentile(jitters, 0.95), 3) if jitters else None,
        "jitter_ms_max_stream": round(max(jitters), 3) if jitters else None,
        "interval_p99_ms_worst_stream": round(max((s["interval_p99_ms"] for s in streams), default=0.0), 2),
        "interval_max_ms_worst_stream": round(max((s["interval_max_ms"] for s in streams), default=0.0), 2),
        **{k: round(v, 2) for k, v in report.items()},
        "server_cpu_pct": round(server_cpu_pct, 1),
        "foreign_cpu_pct": round(foreign, 1),
        "others_before_pct": round(others_before, 1),
        "byes_ok": sum(1 for b in byes if b == 200),
        "offers": by_label(m0, m1, "helpline_queue_offers_total", "result"),
        "left": by_label(m0, m1, "helpline_queue_left_total", "reason"),
        "settled": settled,
        "server_log": log_summary(server.log, log_mark),
        "udp_drops": udp_delta(udp0),
    }
    print(
        f"    {count:>4} bridged: up {result['calls_up']} connected {connected}"
        f" e2e loss {result['e2e_loss_pct']} %"
        f" seq loss {result['seq_loss_pct']} % jitter mean {result['jitter_ms_mean']} ms"
        f" (p95 stream {result['jitter_ms_p95_stream']}, max {result['jitter_ms_max_stream']})"
        f" rtt p50 {result['rtt_ms_p50']} p99 {result['rtt_ms_p99']} ms filler {result['filler_packets']}"
        f" server cpu {result['server_cpu_pct']} % byes {result['byes_ok']}"
        f" clock stalls {result['server_log']['clock_stalls']} (others {result['foreign_cpu_pct']:.0f} %)",
        file=sys.stderr,
    )
    return result


def bridged_ladder(server: Helpline, args: argparse.Namespace) -> dict[str, Any]:
    import uvloop

    steps = []
    for count in args.bridged:
        steps.append(uvloop.run(_bridged_step(server, count, args)))
    good = [
        s
        for s in steps
        if s["connected_to_agent"] == s["calls"]
        and (s["e2e_loss_pct"] or 0) < args.loss_limit
        and (s["seq_loss_pct"] or 0) < args.loss_limit
        and not s["streams_silent"]
    ]
    return {
        "max_bridged_calls": max((s["calls"] for s in good), default=0),
        "loss_limit_pct": args.loss_limit,
        "steps": steps,
    }


LATE_CLOCK = re.compile(r"media clock (\d+) ms late")


def log_summary(log: Path, offset: int) -> dict[str, Any]:
    """What the server logged since byte ``offset``: lines per level, and the media clock's stalls.

    The engine's late-tick counters are not in /metrics; its "media clock N ms late" warnings (a
    tick so late that frames were skipped) are the visible part.
    """
    levels: dict[str, int] = {}
    stalls: list[int] = []
    with log.open("rb") as handle:
        handle.seek(offset)
        for raw in handle:
            line = raw.decode(errors="replace")
            try:
                record = json.loads(line)
            except ValueError:
                levels["raw"] = levels.get("raw", 0) + 1
                continue
            levels[record.get("level", "?")] = levels.get(record.get("level", "?"), 0) + 1
            match = LATE_CLOCK.search(str(record.get("msg", "")))
            if match:
                stalls.append(int(match.group(1)))
    return {"levels": levels, "clock_stalls": len(stalls), "clock_stall_max_ms": max(stalls, default=0)}


def server_errors(log: Path) -> list[str]:
    """Lines of the server log at level error or worse, and anything that is not JSON (tracebacks)."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            level = json.loads(line).get("level")
        except ValueError:
            level = "raw"
        if level in ("error", "critical", "raw"):
            out.append(line)
    return out


# -- report ---------------------------------------------------------------------------------------


RATIO_KEYS = ("max_calls_per_s", "cpu_ms_per_call")


def report(results: dict[str, Any]) -> str:
    base, queue = results.get("baseline_rate", {}), results.get("queue_rate", {})

    def ratio(a: Any, b: Any) -> str:
        return f"{a / b:.2f}" if isinstance(a, int | float) and isinstance(b, int | float) and b else ""

    def cell(d: dict[str, Any], key: str) -> str:
        v = d.get(key)
        return "-" if v is None else str(v)

    lines = [
        f"{'call rate (talk ' + str(results['talk_s']) + ' s)':<40} {'baseline':>10} {'queue':>10} {'q/b':>6}"
    ]
    lines.append("-" * len(lines[0]))
    for label, key in (
        ("max calls/s, 0 failures, all connected", "max_calls_per_s"),
        ("INVITE->200 p50 ms", "p50_ms"),
        ("INVITE->200 p99 ms", "p99_ms"),
        ("server CPU ms/call", "cpu_ms_per_call"),
        ("join->agent answer, mean ms", "asa_ms"),
        ("join->agent answer, max ms", "longest_wait_ms"),
    ):
        lines.append(
            f"{label:<40} {cell(base, key):>10} {cell(queue, key):>10} "
            f"{ratio(queue.get(key), base.get(key)) if key in RATIO_KEYS else '':>6}"
        )
    lines.append("")
    lines.append("per step: rate  baseline ok/fail p50/p99 cpu | queue ok/fail connected p50/p99 cpu ASA")
    b_steps = {s["target_rate"]: s for s in base.get("steps", [])}
    for q in queue.get("steps", []):
        b = b_steps.get(q["target_rate"], {})
        lines.append(
            f"  {q['target_rate']:>5}/s  {b.get('ok', '-')}/{b.get('failed', '-')}"
            f" {b.get('p50_ms')}/{b.get('p99_ms')}"
            f" {b.get('cpu_ms_per_call')} | {q['ok']}/{q['failed']} {q['connected']}"
            f" {q['p50_ms']}/{q['p99_ms']} {q['cpu_ms_per_call']} {q['asa_ms']}"
            f"{'' if q['sustained'] else '  <- not sustained'}"
        )
    bridged = results.get("bridged", {})
    if bridged:
        lines.append("")
        head = (
            f"{'bridged calls':>13} {'connected':>9} {'e2e loss %':>10} {'seq loss %':>10} {'jitter ms':>9}"
            f" {'p95 strm':>8} {'rtt p50':>7} {'rtt p99':>7} {'srv cpu%':>8}"
        )
        lines += [head, "-" * len(head)]
        for s in bridged.get("steps", []):
            lines.append(
                f"{s['calls']:>13} {s['connected_to_agent']:>9} {s['e2e_loss_pct']!s:>10}"
                f" {s['seq_loss_pct']!s:>10} {s['jitter_ms_mean']!s:>9} {s['jitter_ms_p95_stream']!s:>8}"
                f" {s['rtt_ms_p50']:>7} {s['rtt_ms_p99']:>7} {s['server_cpu_pct']:>8}"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--name", default="queue", help="results file bench/results/<name>.json")
    parser.add_argument("--agents", type=int, default=500, help="agents registered and ready")
    parser.add_argument("--rates", default="20,50,100,150,200", help="comma-separated calls/s (ladder)")
    parser.add_argument("--step-seconds", type=float, default=10.0, help="seconds of calls per rate step")
    parser.add_argument("--talk", type=float, default=2.0, help="seconds a caller stays after the 200")
    parser.add_argument(
        "--bridged", default="50,100,200,300,400", help="comma-separated concurrent bridged calls"
    )
    parser.add_argument("--hold", type=float, default=10.0, help="seconds of RTP measured per bridged step")
    parser.add_argument("--setup-parallel", type=int, default=50, help="bridged calls set up at once")
    parser.add_argument("--loss-limit", type=float, default=0.5, help="loss %% a bridged step may have")
    parser.add_argument("--skip", choices=["rate", "baseline", "bridged"], action="append", default=[])
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="seconds each step may wait for other processes to go quiet",
    )
    parser.add_argument(
        "--helpline-log-level", default="warning", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument(
        "--helpline-cmd", default=str(REPO / ".venv/bin/helpline") + " serve --config {config}"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, SIPp files)")
    parser.add_argument("--role", choices=["driver", "media"], default="driver", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "media":
        media_role(args.count)
        return 0
    args.rates = [int(x) for x in args.rates.split(",") if x]
    args.bridged = [int(x) for x in args.bridged.split(",") if x]
    _settings["quiet_wait_s"] = args.quiet_wait
    if os.environ.get("HELPLINE_NETNS") != "1":
        print("warning: not inside scripts/in-netns; fixed ports may clash with other work", file=sys.stderr)
    rates = [] if "rate" in args.skip else args.rates
    bridged = [] if "bridged" in args.skip else args.bridged
    needed = max([*(round(r * (args.talk + 1)) for r in rates), *bridged], default=0)
    if needed > args.agents:
        print(
            f"warning: {args.agents} agents < {needed} calls that may be connected at once:"
            " callers will wait",
            file=sys.stderr,
        )
    results: dict[str, Any] = {
        "name": args.name,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpus": os.cpu_count(),
        "command": "scripts/in-netns .venv/bin/python -m bench.bench_queue "
        + shlex.join(sys.argv[1:] if argv is None else list(argv)),
        "agents": args.agents,
        "talk_s": args.talk,
        "step_seconds": args.step_seconds,
        "rates": args.rates,
        "bridged_counts": args.bridged,
        "hold_s": args.hold,
    }
    with contextlib.ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="helpline-bench-queue-"))
        if args.keep:
            print(f"work folder (kept): {work}", file=sys.stderr)
        else:
            stack.callback(shutil.rmtree, work, ignore_errors=True)
        config = write_setup(work, args.helpline_log_level)
        cmd = shlex.split(args.helpline_cmd.format(config=config, repo=REPO))
        results["helpline_command"] = shlex.join(cmd)
        results["helpline_config"] = config.read_text()
        with helpline(work, cmd) as server, agents_online(server, args.agents, work) as online:
            results["agent_setup"] = online
            results["idle_server_cpu_pct"] = idle_cpu_pct(server)
            print(
                f"server CPU with every agent ready, no calls: {results['idle_server_cpu_pct']} %",
                file=sys.stderr,
            )
            print(
                f"{args.agents} agents ready (created in {online['create_s']} s, registered in "
                f"{online['register_s']} s)",
                file=sys.stderr,
            )
            if "rate" not in args.skip:
                if "baseline" not in args.skip:
                    print("call rate, baseline (answer and wait, no queue)", file=sys.stderr)
                    results["baseline_rate"] = rate_ladder(server, "baseline", DID_ANSWER, args, work)
                print("call rate, queue", file=sys.stderr)
                results["queue_rate"] = rate_ladder(server, "queue", DID_QUEUE, args, work)
            if "bridged" not in args.skip:
                print("bridged calls with RTP", file=sys.stderr)
                results["bridged"] = bridged_ladder(server, args)
            errors = server_errors(server.log)
        results["store_bytes"] = sum(f.stat().st_size for f in (work / "data").rglob("*") if f.is_file())
        results["server_errors"] = errors[:20]
        results["server_error_count"] = len(errors)
    table = report(results)
    results["table"] = table
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{args.name}.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    print(table)
    if errors:
        print(f"\nserver logged {len(errors)} errors, first: {errors[0][:300]}")
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
