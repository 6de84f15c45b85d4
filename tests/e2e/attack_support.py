"""Attackers for the secure-edge tests: sipvicious and SIPp floods, each from its own source address.

Everything here talks to a live ``helpline serve`` over loopback inside the test's network namespace.
Linux routes all of 127.0.0.0/8 to ``lo``, so a socket bound to 127.0.0.66 sends from 127.0.0.66 and
the server sees a distinct source address with no ``ip addr`` or routing changes: sipvicious through
the wrapper below, SIPp with ``-i``, the witness softphone with ``PjsuaAgent(bind=...)``.

- :func:`run_sipvicious` runs the ``main()`` of svmap/svwar/svcrack (Debian's sipvicious 0.3.3, the
  code behind /usr/bin/sv*) with every socket bound to the attacker's address (svwar and svcrack
  ignore their ``-b``) and, on request, another ``User-Agent`` (the tools have no option for it; their
  requests always say ``friendly-scanner``).
- :func:`banned_event`, :func:`active_bans` read the server's security API.
- :func:`start_flood` sends one SIP request per SIPp "call" at a fixed rate from one source address.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.support.sipp import require_binary, sipp_command

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "tests" / "scenarios"
SYSTEM_PYTHON = "/usr/bin/python3"
SIPVICIOUS_HOME = "/usr/share/sipvicious"  # where Debian's sipvicious package keeps its modules

# Runs one sipvicious tool from ``source``, optionally with another User-Agent. svwar and svcrack 0.3.3
# take ``-b`` but their main() never hands it on, so they would send from 127.0.0.1 (our trunk source):
# every socket of the tool's process binds to ``source`` when it asks for "any address". Every request
# of the tools is built by svhelper.makeRequest, which each tool imports by name; for another
# User-Agent the tool's reference is swapped for one that passes ``useragent``. Everything else (what
# is sent, how answers are read) stays the tool's own.
_WRAPPER = """
import importlib, socket, sys
sys.path.insert(0, {home!r})
tool, source, user_agent = sys.argv[1:4]

class BoundSocket(socket.socket):
    def bind(self, address):
        host, *rest = address
        return super().bind((source if host in ("", "0.0.0.0") else host, *rest))

socket.socket = BoundSocket
module = importlib.import_module("sipvicious." + tool)
if user_agent:
    original = module.makeRequest
    def make_request(*args, **kwargs):
        kwargs["useragent"] = user_agent
        return original(*args, **kwargs)
    module.makeRequest = make_request
sys.argv = [tool, *sys.argv[4:]]
sys.exit(module.main())
"""


@dataclass(frozen=True)
class ToolRun:
    """One attacker run: exit code and what it printed (results on stdout, its log on stderr)."""

    command: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def found_nothing(self) -> bool:
        """sipvicious prints a result table on stdout when it found anything, else logs 'found nothing'."""
        return "found nothing" in self.stderr and "+--" not in self.stdout

    def explain(self) -> str:
        return f"$ {' '.join(self.command)}\nexit {self.returncode}\n--- stdout\n{self.stdout[-3000:]}" \
               f"\n--- stderr\n{self.stderr[-3000:]}"


async def run_sipvicious(tool: str, source: str, args: Sequence[str], *, user_agent: str | None = None,
                         timeout: float = 60.0) -> ToolRun:
    """Run ``tool`` (svmap, svwar, svcrack) from ``source`` to its end, killed after ``timeout`` seconds.

    ``user_agent`` None: the tool's own (``friendly-scanner``). The tool's Via names ``source`` too.
    """
    require_binary(tool)  # the Debian package whose modules the wrapper runs
    command = [SYSTEM_PYTHON, "-c", _WRAPPER.format(home=SIPVICIOUS_HOME), tool, source, user_agent or "",
               "-b", source, "-x", source, *args]
    proc = await asyncio.create_subprocess_exec(
        *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        err += b"\n[killed after timeout]"
    return ToolRun(command, proc.returncode if proc.returncode is not None else -9,
                   out.decode(errors="replace"), err.decode(errors="replace"))


# -- the server's security API -----------------------------------------------------------------------


async def active_bans(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    """GET /api/security/bans: the bans in force."""
    response = await api.get("/api/security/bans")
    assert response.status_code == 200, f"GET /api/security/bans: {response.status_code} {response.text}"
    body = response.json()
    items: list[dict[str, Any]] = body["items"] if isinstance(body, dict) else body
    return items


async def security_events(api: httpx.AsyncClient, type: str) -> list[dict[str, Any]]:
    response = await api.get("/api/security-events", params={"type": type, "limit": 500})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def _event_key(event: dict[str, Any]) -> str:
    data = event.get("data") or {}
    return str(data.get("key") or data.get("source") or event.get("source") or "")


async def banned_event(api: httpx.AsyncClient, ip: str, timeout: float = 10.0) -> dict[str, Any]:
    """The ``security.banned`` event for source ``ip`` (polled: the store sink writes in batches)."""
    last: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                last = await security_events(api, "security.banned")
                for event in last:
                    if _event_key(event).split(":")[0] == ip:
                        return event
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"no security.banned event for {ip} within {timeout}s: {last[-5:]}") from None


async def wait_banned(api: httpx.AsyncClient, ip: str, timeout: float = 10.0) -> dict[str, Any]:
    """The active ban on source ``ip`` as GET /api/security/bans lists it."""
    last: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                last = await active_bans(api)
                for ban in last:
                    if ban.get("key") == ip:
                        return ban
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"{ip} is not in GET /api/security/bans after {timeout}s: {last}") from None


def event_time(event: dict[str, Any]) -> float:
    """An event's ``at`` as a POSIX timestamp."""
    return datetime.fromisoformat(str(event["at"]).replace("Z", "+00:00")).timestamp()


def answers_at_all(source_ip: str, target: tuple[str, int], timeout: float = 1.0) -> bytes | None:
    """Send one plain OPTIONS from ``source_ip``; the reply, or None when nothing came back."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source_ip, 0))
        sock.settimeout(timeout)
        port = sock.getsockname()[1]
        stamp = time.monotonic_ns()
        sock.sendto(
            (f"OPTIONS sip:{target[0]}:{target[1]} SIP/2.0\r\n"
             f"Via: SIP/2.0/UDP {source_ip}:{port};branch=z9hG4bKprobe{stamp};rport\r\n"
             f"Max-Forwards: 70\r\nFrom: <sip:probe@{source_ip}>;tag=p{stamp}\r\n"
             f"To: <sip:{target[0]}:{target[1]}>\r\nCall-ID: probe-{stamp}\r\nCSeq: 1 OPTIONS\r\n"
             "Content-Length: 0\r\n\r\n").encode(),
            target,
        )
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


# -- SIPp floods -------------------------------------------------------------------------------------


@dataclass
class Flood:
    """A running SIPp flood; :meth:`stop` ends it and returns how many requests it sent."""

    proc: subprocess.Popen[bytes]
    workdir: Path
    started: float
    """time.time() just before SIPp was started (a flood never starts earlier than this)."""

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)  # SIPp: stop gracefully, write final statistics
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        stats = self.workdir / "stats.csv"
        if not stats.exists():
            return 0
        rows = stats.read_text().splitlines()
        if len(rows) < 2:
            return 0
        header, last = rows[0].split(";"), rows[-1].split(";")
        sent = dict(zip(header, last, strict=False)).get("TotalCallCreated", "0")
        return int(sent or 0)


def start_flood(target: tuple[str, int], source_ip: str, method: str, rate: int, seconds: float,
                workdir: Path) -> Flood:
    """SIPp sending ``method`` requests (tests/scenarios/flood_<method>.xml) at ``rate`` per second."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = sipp_command(
        SCENARIOS / f"flood_{method.lower()}.xml", target, local_ip=source_ip, local_port=0, service="2001",
        calls=max(1, int(rate * seconds)), timeout_s=int(seconds) + 30, workdir=workdir,
        extra=["-r", str(rate), "-l", str(rate * 2)],
    )
    # no statistics-per-message trace: the flood's own logging would cost more than its sending
    cmd = [c for c in cmd if c not in ("-trace_msg", "-trace_err")]
    cmd = _drop_option_pairs(cmd, ("-message_file", "-error_file"))
    started = time.time()
    proc = subprocess.Popen(cmd, cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=(workdir / "stderr.txt").open("wb"))
    return Flood(proc, workdir, started)


def _drop_option_pairs(cmd: list[str], names: Sequence[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for part in cmd:
        if skip:
            skip = False
            continue
        if part in names:
            skip = True
            continue
        out.append(part)
    return out
