"""Extension enumeration through the registrar: answers and their timing must not tell users apart (A2).

300 REGISTER exchanges for existing extensions and 300 for missing ones, interleaved in a random order
after a warm-up, each exchange being the first REGISTER (answered with a challenge) and the digest
answer with a wrong password (answered with a fresh challenge). Every response is compared field by
field after masking what is different on every request (nonce, tags, branch, Call-ID, the user name we
sent); the response times of the two groups are compared with a Mann-Whitney U test (two-sided, normal
approximation with tie correction) and their medians.

The probe sends from 127.0.0.1, which the server's ``[security]`` lists in ``trusted_networks`` (never
banned or limited per source) with user locks raised above what 600 failures can reach: the test looks
at the registrar's answers, not at the ban that would otherwise end it after five wrong passwords.

Noise: on a shared CI machine a burst of other work can shift some response times. The interleaving
spreads such bursts over both groups; a failed comparison is repeated once with fresh samples and the
test fails only when the repetition fails too (a real leak does both times; chance alone, p <= 0.01
twice, once in 10,000 runs). :func:`test_the_comparison_catches_a_slower_lookup` shows the same
machinery failing an agent listener whose lookup is 100 us slower for existing users.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import random
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import httpx
import numpy as np
import pytest

from helpline.sbc_bridge.agents import AgentEdge
from helpline.sbc_bridge.agents.ha1 import digest_ha1
from helpline.sbc_bridge.agents.settings import AgentCredentials, AgentEdgeSettings
from tests.e2e.queue_support import QueueFloor
from tests.e2e.server import RunningServer

FLOOR = QueueFloor(sip_port=5920, agent_port=5930, http_port=8191)
EXISTING = tuple(str(n) for n in range(3101, 3121))  # 20 agents, four digits like the missing ones
MISSING = tuple(str(n) for n in range(3501, 3801))
TRIALS = 300  # per group
WARMUP = 40
ALPHA = 0.01
MAX_MEDIAN_GAP_S = 0.002
WRONG_PASSWORD = "not-the-password"
SECURITY = """
[security]
trusted_networks = ["127.0.0.0/8"]
lock_after_failures = 100000
"""

Group = Literal["existing", "missing"]
Step = Literal["challenge", "answer"]


# -- the probe ---------------------------------------------------------------------------------------


@dataclass
class Probe:
    """A blocking UDP REGISTER client: one request in flight, response time by perf_counter."""

    target: tuple[str, int]
    sock: socket.socket = field(init=False)
    port: int = field(init=False)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(2.0)
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()

    def register(self, user: str, call_id: str, cseq: int, authorization: str | None) -> tuple[bytes, float]:
        host, port = self.target
        lines = [
            f"REGISTER sip:{host}:{port} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{os.urandom(8).hex()};rport",
            "Max-Forwards: 70",
            f"From: <sip:{user}@{host}>;tag={os.urandom(6).hex()}",
            f"To: <sip:{user}@{host}>",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} REGISTER",
            f"Contact: <sip:{user}@127.0.0.1:{self.port}>",
            "Expires: 60",
        ]
        if authorization:
            lines.append(f"Authorization: {authorization}")
        data = ("\r\n".join([*lines, "Content-Length: 0", "", ""])).encode()
        while True:  # drop anything left over (a retransmission) before timing this request
            self.sock.setblocking(False)
            try:
                self.sock.recv(65535)
            except BlockingIOError:
                break
            finally:
                self.sock.setblocking(True)
                self.sock.settimeout(2.0)
        started = time.perf_counter()
        self.sock.sendto(data, self.target)
        reply = self.sock.recv(65535)
        return reply, time.perf_counter() - started

    def exchange(self, user: str) -> list[tuple[Step, bytes, float]]:
        """First REGISTER, then the digest answer with a wrong password to the challenge it got."""
        call_id = f"{os.urandom(10).hex()}@enum"
        first, t1 = self.register(user, call_id, 1, None)
        second, t2 = self.register(user, call_id, 2, wrong_answer(first, user, self.target))
        return [("challenge", first, t1), ("answer", second, t2)]


def wrong_answer(challenge: bytes, user: str, target: tuple[str, int]) -> str:
    """An RFC 8760 digest Authorization for ``user`` with a wrong password, to the first challenge."""
    text = challenge.decode()
    header = re.search(r"^WWW-Authenticate:\s*(Digest .*)$", text, re.M | re.I)
    assert header is not None, f"no challenge in {text!r}"
    params = dict(re.findall(r'(\w+)="?([^",]+)"?', header.group(1)))
    algorithm = params.get("algorithm", "MD5").upper()
    digest: Callable[[str], str] = (
        (lambda s: hashlib.sha256(s.encode()).hexdigest()) if algorithm == "SHA-256"
        else (lambda s: hashlib.md5(s.encode(), usedforsecurity=False).hexdigest())
    )
    uri = f"sip:{target[0]}:{target[1]}"
    cnonce, nc = os.urandom(8).hex(), "00000001"
    ha1 = digest(f"{user}:{params['realm']}:{WRONG_PASSWORD}")
    response = digest(f"{ha1}:{params['nonce']}:{nc}:{cnonce}:auth:{digest('REGISTER:' + uri)}")
    return (f'Digest username="{user}", realm="{params["realm"]}", nonce="{params["nonce"]}", uri="{uri}", '
            f'response="{response}", algorithm={algorithm}, qop=auth, nc={nc}, cnonce="{cnonce}"')


# -- comparing answers ---------------------------------------------------------------------------------

_PER_REQUEST = [
    (re.compile(r'nonce="[^"]*"'), lambda m: f'nonce="<{len(m.group(0)) - 8} chars>"'),
    (re.compile(r"branch=[^;,\s]+"), lambda m: "branch=<branch>"),
    (re.compile(r"tag=[^;,\s]+"), lambda m: "tag=<tag>"),
]


def normalised(response: bytes, user: str) -> tuple[str, list[tuple[str, str]], str]:
    """Status line, [(header name, value)] in order, body; per-request values masked.

    What stays is what could tell an existing user from a missing one: status, reason, which headers
    in which order, every other value (realm, algorithm, qop, stale, lengths of the nonce...).
    """
    head, _, body = response.decode(errors="replace").partition("\r\n\r\n")
    status, *lines = head.split("\r\n")
    headers = []
    for line in lines:
        name, _, value = line.partition(":")
        value = value.strip()
        if name.lower() == "call-id":
            value = "<call-id>"
        for pattern, mask in _PER_REQUEST:
            value = pattern.sub(mask, value)
        headers.append((name, value.replace(f"sip:{user}@", "sip:<user>@")))
    return status, headers, body


def field_differences(a: tuple[str, list[tuple[str, str]], str], b: tuple[str, list[tuple[str, str]], str]
                      ) -> list[str]:
    """What differs between two normalised responses, field by field (empty: identical)."""
    out = []
    if a[0] != b[0]:
        out.append(f"status line {a[0]!r} != {b[0]!r}")
    if [n for n, _ in a[1]] != [n for n, _ in b[1]]:
        out.append(f"header names/order {[n for n, _ in a[1]]} != {[n for n, _ in b[1]]}")
    for (name, va), (_, vb) in zip(a[1], b[1], strict=False):
        if va != vb:
            out.append(f"{name}: {va!r} != {vb!r}")
    if a[2] != b[2]:
        out.append(f"body {a[2]!r} != {b[2]!r}")
    return out


# -- timing statistics -----------------------------------------------------------------------------------


def mann_whitney_p(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided p of the Mann-Whitney U test (normal approximation, tie-corrected, continuity)."""
    n1, n2 = len(x), len(y)
    values = np.concatenate([x, y])
    order = values.argsort(kind="mergesort")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    i = 0
    while i < len(values):  # average ranks over ties
        j = i
        while j + 1 < len(values) and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u1 = ranks[:n1].sum() - n1 * (n1 + 1) / 2
    _, counts = np.unique(values, return_counts=True)
    n = n1 + n2
    sigma = math.sqrt(n1 * n2 / 12 * ((n + 1) - float((counts**3 - counts).sum()) / (n * (n - 1))))
    if sigma == 0:
        return 1.0
    z = (abs(u1 - n1 * n2 / 2) - 0.5) / sigma
    return math.erfc(max(z, 0.0) / math.sqrt(2))


@dataclass(frozen=True)
class Comparison:
    step: Step
    p: float
    median_existing_ms: float
    median_missing_ms: float

    @property
    def separable(self) -> bool:
        gap = abs(self.median_existing_ms - self.median_missing_ms) / 1000
        return self.p <= ALPHA or gap >= MAX_MEDIAN_GAP_S

    def __str__(self) -> str:
        return (f"{self.step}: p={self.p:.4f}, median existing {self.median_existing_ms:.3f} ms, "
                f"missing {self.median_missing_ms:.3f} ms")


@dataclass
class Round:
    """One interleaved run: every response and every time, by group and step."""

    times: dict[tuple[Group, Step], list[float]] = field(default_factory=dict)
    responses: dict[tuple[Group, Step], list[tuple[str, bytes]]] = field(default_factory=dict)

    def comparisons(self) -> list[Comparison]:
        out = []
        for step in ("challenge", "answer"):
            existing = np.array(self.times[("existing", step)])
            missing = np.array(self.times[("missing", step)])
            out.append(Comparison(step, mann_whitney_p(existing, missing),
                                  1000 * float(np.median(existing)), 1000 * float(np.median(missing))))
        return out


def run_round(target: tuple[str, int], seed: int, trials: int = TRIALS) -> Round:
    """Warm up, then ``trials`` exchanges per group in a random interleaving (blocking: run in a thread)."""
    rng = random.Random(seed)
    plan: list[tuple[Group, str]] = [("existing", rng.choice(EXISTING)) for _ in range(trials)]
    plan += [("missing", rng.choice(MISSING)) for _ in range(trials)]
    rng.shuffle(plan)
    warmup: list[tuple[Group, str]] = [(g, rng.choice(EXISTING if g == "existing" else MISSING))
                                       for g in ("existing", "missing") for _ in range(WARMUP // 2)]
    result = Round()
    probe = Probe(target)
    try:
        for _, user in warmup:
            probe.exchange(user)
        for group, user in plan:
            for step, reply, elapsed in probe.exchange(user):
                result.times.setdefault((group, step), []).append(elapsed)
                result.responses.setdefault((group, step), []).append((user, reply))
    finally:
        probe.close()
    return result


def timing_verdict(target: tuple[str, int]) -> tuple[list[Comparison], list[Comparison], Round]:
    """The first round's comparisons, those of a repetition with fresh samples when one of them
    separated the groups (else empty), and the first round's samples."""
    first = run_round(target, seed=1)
    comparisons = first.comparisons()
    repeated = run_round(target, seed=2).comparisons() if any(c.separable for c in comparisons) else []
    return comparisons, repeated, first


# -- the live server -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    serving = FLOOR.serve(tmp_path_factory.mktemp("helpline-enum"), "[queues.support]\n" + SECURITY, {})
    server = next(serving)
    with httpx.Client(base_url=server.api, headers=server.headers, timeout=5) as api:
        for extension in EXISTING:
            body = {"extension": extension, "display_name": f"Agent {extension}",
                    "password": f"pw-{extension}-enum", "skills": {}, "queues": [{"queue": "support"}]}
            response = api.post("/api/agents", json=body)
            assert response.status_code == 201, response.text
    yield server
    for _ in serving:  # stops the server; fails on any error it logged
        pass


async def test_registrar_answers_existing_and_missing_users_alike(eserver: RunningServer) -> None:
    target = ("127.0.0.1", FLOOR.agent_port)
    first, repeated, sample = await asyncio.to_thread(timing_verdict, target)
    for step in ("challenge", "answer"):
        reference_user, reference = sample.responses[("existing", step)][0]
        canonical = normalised(reference, reference_user)
        assert canonical[0].startswith("SIP/2.0 401 "), canonical
        for group in ("existing", "missing"):
            for user, reply in sample.responses[(group, step)]:
                differences = field_differences(canonical, normalised(reply, user))
                assert not differences, f"{step} for {group} user {user} differs: {differences}"
    print("\n".join(str(c) for c in first))
    if repeated:
        print("repeated with fresh samples:\n" + "\n".join(str(c) for c in repeated))
    for comparison in repeated or first:
        assert not comparison.separable, f"response times tell users apart: {comparison} (first: {first})"


# -- the comparison can fail -------------------------------------------------------------------------------

LEAK_S = 0.0001


async def test_the_comparison_catches_a_slower_lookup() -> None:
    """An agent listener whose credentials lookup takes 100 us longer for existing users is caught.

    Same probe, same statistics, over the wire; only the lookup differs from a normal listener.
    """
    settings = AgentEdgeSettings(host="127.0.0.1", port=0, transports=("udp",))
    known = {
        user: AgentCredentials(user, digest_ha1(user, settings.realm, "pw", "MD5"),
                               digest_ha1(user, settings.realm, "pw", "SHA-256"))
        for user in EXISTING
    }

    def slow_for_existing(user: str) -> AgentCredentials | None:
        found = known.get(user)
        if found is not None:
            end = time.perf_counter() + LEAK_S
            while time.perf_counter() < end:  # the extra work a careless lookup does for a real user
                pass
        return found

    edge = AgentEdge(settings, credentials=slow_for_existing, on_bindings=lambda *_: None,
                     on_security=lambda *_: None)
    await edge.start()
    try:
        round_ = await asyncio.to_thread(run_round, edge.local_addresses["udp"], 3, 150)
    finally:
        await edge.stop()
    comparisons = {c.step: c for c in round_.comparisons()}
    # the first REGISTER carries no credentials: no lookup, nothing to see
    answer = comparisons["answer"]
    assert answer.separable, f"a {LEAK_S * 1e6:.0f} us leak went unseen: {answer}"
    assert answer.p < 1e-6, answer
