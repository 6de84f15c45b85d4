"""Starts a real ``helpline serve`` process for end-to-end tests and reads its API."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
PR_SET_PDEATHSIG = 1  # linux/prctl.h
WIRE_FLOWS = REPO / "tests" / "wire_flows"

DIDS = {
    "+18005550101": "dtmf_branch",
    "+18005550102": "long_prompt",
    "+18005550103": "repeat_digits",
    "+18005550104": "sensitive_pin",
    "+18005550105": "transfer",
    "+18005550100": "dtmf_branch",
    "+18005550106": "queue_support",
    "+18005550107": "queue_spanish",
    "+18005550108": "queue_announce",
    "+18005550109": "recorded_queue",
    "+18005550110": "recorded_payment",
    "+18005550111": "recorded_notice",
    "+18005550112": "recorded_notice_queue",
}


@dataclass
class RunningServer:
    """A live server: where it listens and how to ask it things."""

    proc: subprocess.Popen[bytes]
    sip_port: int
    http_port: int
    data_dir: Path
    log_path: Path
    token: str = ""
    """An API bearer token of the ``admin`` user the server created on first start."""

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def headers(self) -> dict[str, str]:
        """What an API request sends to act as ``admin``."""
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str, **params: Any) -> Any:
        r = httpx.get(self.api + path, params=params, headers=self.headers, timeout=5)
        r.raise_for_status()
        return r.json()

    def calls(self, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get("/api/calls", **params)["items"]
        return items

    def wait_call(self, *, timeout: float = 15.0, ended: bool = True, **filters: Any) -> dict[str, Any]:
        """Poll the API until a call matching ``filters`` exists (and has ended), return it with events."""
        deadline = time.monotonic() + timeout
        last: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            last = self.calls(**filters)
            for item in last:
                if not ended or item.get("ended_at"):
                    detail: dict[str, Any] = self.get(f"/api/calls/{item['id']}")
                    return detail
            time.sleep(0.1)
        raise AssertionError(f"no {'ended ' if ended else ''}call matching {filters} in {timeout}s: {last}")

    def log_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"raw": line})
        return out

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode


def _die_with_parent() -> None:
    """In the child: SIGTERM when the test process dies, so a killed run leaves no server behind."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def write_config(path: Path, *, sip_port: int, http_port: int, data_dir: Path, extra: str = "",
                 flows_dir: Path = WIRE_FLOWS, agent_port: int | None = None) -> None:
    dids = ", ".join(f'"{k}" = "{v}"' for k, v in DIDS.items())
    # TLS listens one port above each listener: several servers share a namespace, so the 5061/5071
    # defaults would clash (every sip_port in these tests is even, every TLS port odd)
    agent_port = agent_port if agent_port is not None else sip_port + 10
    path.write_text(
        f"""
[server]
data_dir = "{data_dir}"
flows_dir = "{flows_dir}"
log_level = "info"
flow_reload_interval_s = 0.5

[http]
host = "127.0.0.1"
port = {http_port}

[media]
host = "127.0.0.1"
rtp_port_min = 30000
rtp_port_max = 34999
media_timeout_s = 8

[sip]
host = "127.0.0.1"
port = {sip_port}
tls_port = {sip_port + 1}

[policy]
blocked_countries = ["+7", "+850"]

[agents]
host = "127.0.0.1"
port = {agent_port}
tls_port = {agent_port + 1}

[[trunks]]
name = "carrier"
sources = ["127.0.0.1/32"]
country_code = "1"
national_prefix = "1"
international_prefix = "011"
dids = {{ {dids} }}
{extra}
"""
    )


def admin_token(cfg: Path) -> str:
    """An API token for ``admin`` (made by the server on first start), from ``helpline user token``
    against the same configuration, as an operator would get one."""
    result = subprocess.run(
        [sys.executable, "-m", "helpline", "user", "token", "admin", "--days", "1", "--config", str(cfg)],
        capture_output=True, text=True, cwd=REPO, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if result.returncode != 0:
        raise AssertionError(f"helpline user token failed: {result.stderr}")
    return result.stdout.strip()


def start_server(tmp: Path, *, sip_port: int = 5070, http_port: int = 8090, extra: str = "",
                 env: dict[str, str] | None = None, flows_dir: Path = WIRE_FLOWS,
                 agent_port: int | None = None) -> RunningServer:
    """Start ``helpline serve`` and wait until /healthz answers (20 s at most)."""
    data_dir = tmp / "data"
    cfg = tmp / "helpline.toml"
    write_config(cfg, sip_port=sip_port, http_port=http_port, data_dir=data_dir, extra=extra,
                 flows_dir=flows_dir, agent_port=agent_port)
    log_path = tmp / "server.log"
    log_file = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "helpline", "serve", "--config", str(cfg)],
        stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, **(env or {})},
        preexec_fn=_die_with_parent,
    )
    server = RunningServer(proc, sip_port, http_port, data_dir, log_path)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"helpline serve exited {proc.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            if httpx.get(server.api + "/healthz", timeout=1).status_code == 200:
                server.token = admin_token(cfg)
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise AssertionError(f"helpline serve did not become healthy:\n{log_path.read_text()[-4000:]}")
