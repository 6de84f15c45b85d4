"""Bans against a real ``helpline serve``: a password guesser on the agent port is banned, the ban is
listed by the API, ``helpline security unban`` (another process) lifts it within two seconds, and a
ban outlives a restart of the service.

The guesser sends from 127.0.0.2: 127.0.0.1 is the configured trunk's source, which is trusted and
never banned.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.server import REPO, RunningServer, start_server
from tests.sbc_bridge.agents.raw_agent import digest_answer, digest_params
from tests.support.sip_uac import SipMessage, build_message, parse_message

SIP_PORT, AGENT_PORT, HTTP_PORT = 5800, 5810, 8180
ATTACKER = "127.0.0.2"
EXTENSION = "1001"
BAN_AFTER = 5  # [security] ban_after_failures, the default
LIFT_WITHIN_S = 2.0


def helpline(cfg: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """One ``helpline`` command against the server's configuration, as an operator would run it."""
    return subprocess.run(
        [sys.executable, "-m", "helpline", *args, "--config", str(cfg)], input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL, capture_output=True, text=True,
        cwd=REPO, timeout=60,
    )  # fmt: skip


class Guesser:
    """A UDP socket on 127.0.0.2 that asks the agent listener to register ``EXTENSION`` with wrong
    passwords, one fresh challenge per guess."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ATTACKER, 0))
        self.port = self.sock.getsockname()[1]
        self.registrar = ("127.0.0.1", AGENT_PORT)
        self.cseq = 0
        self.call_id = f"{os.urandom(6).hex()}@guesser"

    def close(self) -> None:
        self.sock.close()

    def register(self, authorization: str | None = None, timeout: float = 1.0) -> SipMessage | None:
        """Send one REGISTER; its final response, or None when nothing came back in ``timeout``."""
        self.cseq += 1
        branch = f"z9hG4bK{os.urandom(6).hex()}"
        host, port = self.registrar
        headers = [
            ("Via", f"SIP/2.0/UDP {ATTACKER}:{self.port};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:{EXTENSION}@{host}>;tag=guess"),
            ("To", f"<sip:{EXTENSION}@{host}>"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self.cseq} REGISTER"),
            ("Contact", f"<sip:{EXTENSION}@{ATTACKER}:{self.port}>"),
            ("Expires", "60"),
        ]
        if authorization:
            headers.append(("Authorization", authorization))
        self.sock.sendto(build_message(f"REGISTER sip:{host}:{port} SIP/2.0", headers), self.registrar)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                return None
            message = parse_message(data)
            if message.is_response and message.branch == branch and message.status >= 200:
                return message
        return None

    def guess(self, password: str) -> SipMessage | None:
        """One wrong answer to a fresh challenge; the response to it (None: no answer at all)."""
        challenge = self.register()
        if challenge is None:
            return None
        assert challenge.status == 401, challenge.start_line
        params = digest_params(challenge.header("www-authenticate") or "")
        uri = f"sip:{self.registrar[0]}:{self.registrar[1]}"
        answer = digest_answer(params, method="REGISTER", uri=uri, username=EXTENSION, password=password)
        return self.register(answer)

    def guess_until_banned(self) -> int:
        """Guess until the listener goes silent; how many wrong answers were refused before that."""
        for refused in range(BAN_AFTER + 1):
            response = self.guess(f"wrong-{refused}")
            if response is None:
                return refused
            assert response.status in (401, 403), response.start_line
        raise AssertionError(f"still answered after {BAN_AFTER + 1} wrong passwords")


def listed_bans(server: RunningServer) -> dict[str, dict[str, object]]:
    r = httpx.get(f"{server.api}/api/security/bans", headers=server.headers, timeout=5)
    assert r.status_code == 200, r.text
    return {str(ban["key"]): ban for ban in r.json()["items"]}


def wait_listed(server: RunningServer, key: str, timeout: float = 5.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        bans = listed_bans(server)
        if key in bans:
            return bans[key]
        time.sleep(0.1)
    raise AssertionError(f"{key} not listed by /api/security/bans within {timeout}s")


def wait_events(server: RunningServer, type: str, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The stored security events of ``type`` once there are ``count`` of them (stored in batches)."""
    deadline = time.monotonic() + timeout
    items: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        r = httpx.get(f"{server.api}/api/security-events", params={"type": type}, headers=server.headers,
                      timeout=5)  # fmt: skip
        items = r.json()["items"]
        if len(items) >= count:
            return items
        time.sleep(0.1)
    raise AssertionError(f"{len(items)} {type} event(s) stored within {timeout}s, expected {count}: {items}")


def active_bans_metric(server: RunningServer) -> float:
    """``helpline_security_bans_active{kind="source"}`` as /metrics shows it now."""
    text = httpx.get(f"{server.api}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith('helpline_security_bans_active{kind="source"}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("helpline_security_bans_active is not exposed")


def start(tmp: Path) -> RunningServer:
    return start_server(tmp, sip_port=SIP_PORT, http_port=HTTP_PORT, agent_port=AGENT_PORT)


def assert_clean_stop(server: RunningServer) -> None:
    code = server.stop()
    problems = [
        line for line in server.log_lines()
        if line.get("level") in ("error", "critical") or "Traceback" in str(line.get("raw", ""))
    ]  # fmt: skip
    assert code == 0, f"helpline serve exited {code}"
    assert not problems, f"server logged errors: {problems[:5]}"


@pytest.fixture
def guesser() -> Iterator[Guesser]:
    g = Guesser()
    yield g
    g.close()


def test_a_guesser_is_banned_unbanned_by_the_cli_and_a_ban_survives_a_restart(
    tmp_path: Path, guesser: Guesser
) -> None:
    server = start(tmp_path)
    cfg = tmp_path / "helpline.toml"
    try:
        added = helpline(cfg, "agent", "add", EXTENSION, "--name", "Ann", "--password-stdin",
                         stdin="the-right-one\n")  # fmt: skip
        assert added.returncode == 0, added.stderr

        assert guesser.guess_until_banned() == BAN_AFTER
        ban = wait_listed(server, ATTACKER)
        assert (ban["kind"], ban["reason"]) == ("source", "auth_failures")
        assert guesser.register(timeout=1.0) is None, "a banned source got an answer"
        assert active_bans_metric(server) == 1.0

        lifted = helpline(cfg, "security", "unban", ATTACKER)
        assert lifted.returncode == 0, lifted.stderr
        unbanned_at = time.monotonic()
        answer = None
        while answer is None and time.monotonic() - unbanned_at < LIFT_WITHIN_S:
            answer = guesser.register(timeout=0.2)
        assert answer is not None and answer.status == 401, "no answer within 2 s of the unban"
        assert ATTACKER not in listed_bans(server)
        assert active_bans_metric(server) == 0.0
        unbanned = wait_events(server, "security.unbanned", 1)
        actor = f"cli:{getpass.getuser()}"
        assert [(e["data"]["key"], e["data"]["by"]) for e in unbanned] == [(ATTACKER, actor)]

        # banned again, then the service restarts: the ban is still there
        assert guesser.guess_until_banned() == BAN_AFTER
        wait_listed(server, ATTACKER)
    finally:
        assert_clean_stop(server)

    server = start(tmp_path)
    try:
        assert ATTACKER in listed_bans(server)
        assert guesser.register(timeout=1.5) is None, "the ban did not survive the restart"
        time.sleep(1.5)  # the restored ban must not be announced again: give a stray event time to land
        events = wait_events(server, "security.banned", 2)
        assert [e["data"]["key"] for e in events] == [ATTACKER, ATTACKER]  # once per ban, not per packet
    finally:
        assert_clean_stop(server)
