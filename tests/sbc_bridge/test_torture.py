"""RFC 4475 torture messages replayed against live edges, with legitimate traffic running alongside.

Every message of tests/sip_torture/ goes to the trunk edge (TrunkBridge, from a trunk source) and to
the agent edge (AgentEdge), over UDP and TCP, one fresh socket or connection each. The reaction seen
on the wire is compared with expected.toml; meanwhile SIPp places real calls through the same trunk
edge (INVITE/200/ACK/BYE), or a raw agent keeps re-registering with digest on the agent edge, and
every one of those must succeed. No ERROR is logged by the edge. A second test holds the validator's
verdict per message (what a 4xx/5xx must say), and the last ones cover Max-Forwards (A25) and the
size/count caps of the guard (A12).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiosipua.message import SipMessage, SipRequest

from helpline.sbc_bridge import InboundCall, TrunkBridge
from helpline.sbc_bridge.guard import EdgeGuard, SecuritySettings
from helpline.sbc_bridge.validation import receiving, start_line_problem, validate_request
from tests.sbc_bridge.agents.agent_support import PASSWORDS, AgentHarness, build_harness
from tests.sbc_bridge.agents.raw_agent import RawAgent, digest_answer, digest_params
from tests.sbc_bridge.edge_support import (
    DID,
    DID_NATIONAL,
    PCMU_ANSWER,
    SCENARIOS,
    Edge,
    answer_and_hold,
    build_edge,
)
from tests.sbc_bridge.torture_support import (
    Addr,
    Answer,
    Expectation,
    TcpPeer,
    UdpPeer,
    ack_for,
    load_manifest,
    render,
    reply_to,
    request_uri_of,
)
from tests.support.sipp import run_sipp

MANIFEST = load_manifest()
SIPP_CALL_ID = re.compile(r"^[0-9]+-[0-9]+@")
USER = "1001"
FIRST_ANSWER_S = 1.0  # silence after this long is "silence"
FINAL_AFTER_PROVISIONAL_S = 5.0
NEXT_MESSAGE_S = 1.5  # a second message in the same bytes (dblreq over TCP)

pytestmark = pytest.mark.peer


# --- one replay ---


@dataclass
class Observed:
    tokens: list[str] = field(default_factory=list)
    finals: list[Answer] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def reaction(self) -> str:
        return ",".join(self.tokens) or "silence"


@dataclass
class Target:
    """Where a replay goes and how to tell an admitted call from a plain answer."""

    listener: str
    transport: str
    addr: Addr
    calls: Callable[[], list[InboundCall]]
    bindings: Callable[[str], list[str]] = lambda user: []


async def _finals(read: Callable[[float], Awaitable[Answer | None]], wanted: int) -> list[Answer]:
    """Final answers (provisional ones skipped) until ``wanted`` came or the line went quiet."""
    finals: list[Answer] = []
    wait = FIRST_ANSWER_S
    while len(finals) < wanted:
        answer = await read(wait)
        if answer is None:
            break
        if answer.status < 200:
            wait = FINAL_AFTER_PROVISIONAL_S
            continue
        finals.append(answer)
        wait = NEXT_MESSAGE_S
    return finals


def _token(target: Target, answer: Answer) -> str:
    call_id = answer.first("call-id")
    if answer.status == 486 and any(c.sip_call_id == call_id for c in target.calls()):
        return "call"
    return str(answer.status)


def _check_answer(expect: Expectation, target: Target, answer: Answer, observed: Observed) -> None:
    named = expect.warning is None or expect.warning.lower() in answer.first("warning").lower()
    if answer.status >= 400 and answer.status not in (401, 405, 486, 501) and not named:
        observed.problems.append(f"Warning {answer.first('warning')!r} does not name {expect.warning}")
    for name, value in expect.headers.items():
        got = ", ".join(answer.headers.get(name.lower(), []))
        if value.lower() not in got.lower():
            observed.problems.append(f"{name} {got!r} lacks {value!r}")
    if _token(target, answer) == "call":
        call = next(c for c in target.calls() if c.sip_call_id == answer.first("call-id"))
        if call.did != DID:
            observed.problems.append(f"call reached on_call with DID {call.did!r}, not {DID}")


async def replay_udp(expect: Expectation, target: Target) -> Observed:
    observed = Observed()
    peer = UdpPeer()
    try:
        data = render(
            expect.name, edge=target.addr, via=peer.addr, transport="udp", did=DID_NATIONAL, user=USER
        )
        await peer.send(data, target.addr)
        wanted = len(expect.reaction(target.listener, "udp").split(","))
        observed.finals = await _finals(peer.answer, wanted)
        if len(observed.finals) == wanted:  # anything more (dblreq's INVITE) would show now
            extra = await peer.answer(NEXT_MESSAGE_S if wanted == 1 and expect.name == "dblreq" else 0.05)
            if extra is not None:
                observed.finals.append(extra)
        for answer in observed.finals:
            observed.tokens.append(_token(target, answer))
            _check_answer(expect, target, answer, observed)
            if answer.first("cseq").upper().endswith("INVITE") and answer.status >= 300:
                await peer.send(ack_for(answer, request_uri_of(data), "udp", peer.addr), target.addr)
        if expect.binding and observed.finals and observed.finals[0].status == 401:
            await _register_with_digest(expect, target, observed, data, observed.finals[0], peer)
    finally:
        peer.close()
    return observed


async def replay_tcp(expect: Expectation, target: Target) -> Observed:
    observed = Observed()
    peer = await TcpPeer.open(target.addr)
    try:
        data = render(
            expect.name, edge=target.addr, via=peer.addr, transport="tcp", did=DID_NATIONAL, user=USER
        )
        await peer.send(data)
        expected = expect.reaction(target.listener, "tcp").split(",")
        wanted = len([t for t in expected if t not in ("close", "silence")])
        observed.finals = await _finals(peer.answer, max(wanted, 1))
        for answer in observed.finals:
            observed.tokens.append(_token(target, answer))
            _check_answer(expect, target, answer, observed)
            if answer.first("cseq").upper().endswith("INVITE") and answer.status >= 300:
                await peer.send(ack_for(answer, request_uri_of(data), "tcp", peer.addr))
        if await peer.closed_within(1.0 if "close" in expected else 0.2):
            observed.tokens.append("close")
    finally:
        await peer.close()
    return observed


async def _register_with_digest(
    expect: Expectation, target: Target, observed: Observed, data: bytes, challenge: Answer, peer: UdpPeer
) -> None:
    """RFC 4475 3.3.12-14: the REGISTER must succeed once authenticated; check the stored contact."""
    params = digest_params(next(v for v in challenge.headers["www-authenticate"] if "MD5" in v))
    uri = request_uri_of(data)
    auth = digest_answer(params, method="REGISTER", uri=uri, username=USER, password=PASSWORDS[USER])
    first, rest = data.split(b"\r\n", 1)
    retry = first + b"\r\nAuthorization: " + auth.encode() + b"\r\n" + rest
    retry = retry.replace(b"CSeq: 1 REGISTER", b"CSeq: 2 REGISTER").replace(
        f"branch=z9hG4bK{expect.name}".encode(), f"branch=z9hG4bK{expect.name}2".encode()
    )
    await peer.send(retry, target.addr)
    finals = await _finals(peer.answer, 1)
    if not finals or finals[0].status != 200:
        observed.problems.append(f"authenticated retry got {[a.status for a in finals] or 'silence'}")
        return
    assert expect.binding is not None
    wanted = expect.binding.replace("{{user}}", USER).replace("{{via}}", f"{peer.addr[0]}:{peer.addr[1]}")
    stored = target.bindings(USER)
    if wanted not in stored:
        observed.problems.append(f"stored bindings {stored} do not hold {wanted!r}")


async def replay_all(target: Target) -> list[tuple[Expectation, str, Observed]]:
    results = []
    for expect in MANIFEST:
        wanted = expect.reaction(target.listener, target.transport)
        if wanted == "n/a":
            continue
        replay = replay_udp if target.transport == "udp" else replay_tcp
        async with asyncio.timeout(30):
            observed = await replay(expect, target)
        results.append((expect, wanted, observed))
    return results


def verdict(target: Target, results: list[tuple[Expectation, str, Observed]]) -> list[str]:
    """Readable lines for every mismatch (empty when all reactions are as expected)."""
    lines = []
    for expect, wanted, observed in results:
        if observed.reaction != wanted or observed.problems:
            detail = "; ".join(observed.problems)
            lines.append(
                f"{target.listener}/{target.transport} {expect.name} ({expect.section}): "
                f"expected {wanted}, got {observed.reaction}{' - ' + detail if detail else ''}"
            )
    return lines


# --- the edges and the legitimate traffic beside the torture ---


@contextlib.asynccontextmanager
async def trunk_edge(*, guarded: bool = False) -> AsyncIterator[Edge]:
    """A trunk edge refusing torture INVITEs with 486 once admitted, answering SIPp's calls.

    ``guarded``: with the production guard (SecuritySettings() defaults), its events recorded with
    the bridge's. build_edge takes no guard, so the bridge is rebuilt with the same callbacks.
    """
    edge = build_edge()
    if guarded:
        plain = edge.bridge
        guard = EdgeGuard(SecuritySettings(), on_event=lambda kind, data: edge.security.append((kind, data)))
        edge.bridge = TrunkBridge(
            plain.settings,
            plain.trunks,
            plain.policy,
            plain._on_call,
            plain._on_security,
            plain._on_refused,
            guard=guard,
        )

    async def behaviour(call: InboundCall) -> None:
        if SIPP_CALL_ID.match(call.sip_call_id):
            await answer_and_hold(call)
        else:
            call.reject(486, "Busy Here")

    edge.behaviour = behaviour
    await edge.bridge.start()
    try:
        yield edge
    finally:
        await edge.bridge.stop()


@contextlib.asynccontextmanager
async def agent_edge() -> AsyncIterator[AgentHarness]:
    harness = build_harness()
    await harness.edge.start()
    try:
        yield harness
    finally:
        await harness.edge.stop()


async def legit_calls(edge: Edge, done: asyncio.Event) -> list[int]:
    """SIPp calls (INVITE/200/ACK/BYE) one after another until the torture replay is done."""
    codes: list[int] = []
    while not done.is_set() or not codes:
        result = await run_sipp(
            SCENARIOS / "uac_basic.xml", edge.udp, service=DID_NATIONAL, keys={"caller": "2125550100"}
        )
        assert result.returncode == 0, result.explain()
        codes.append(result.returncode)
    return codes


async def legit_registrations(harness: AgentHarness, done: asyncio.Event) -> int:
    """A real agent (1002) re-registering with digest until the torture replay is done."""
    agent = await RawAgent.open(harness.udp)
    count = 0
    try:
        while not done.is_set() or count == 0:
            response = await agent.register("1002", PASSWORDS["1002"], expires=120)
            assert response.status == 200, response.start_line
            count += 1
            await asyncio.sleep(0.2)
    finally:
        agent.close()
    return count


@pytest.fixture
def edge_errors(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    caplog.set_level(logging.WARNING, logger="helpline")

    def errors() -> list[str]:
        return [
            f"{r.name}: {r.getMessage()}"
            for r in caplog.records
            if r.levelno >= logging.ERROR and r.name.startswith("helpline")
        ]

    return errors


async def _torture_with_legit_traffic(
    target: Target, legit: Callable[[asyncio.Event], Coroutine[Any, Any, Any]]
) -> tuple[list[str], Any]:
    done = asyncio.Event()
    traffic: asyncio.Task[Any] = asyncio.create_task(legit(done))
    try:
        results = await replay_all(target)
    finally:
        done.set()
    async with asyncio.timeout(60):
        legit_result = await traffic
    return verdict(target, results), legit_result


@pytest.mark.parametrize("guarded", [False, True], ids=["bare", "guarded"])
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_trunk_edge_reacts_to_every_torture_message_as_the_rfc_says(
    transport: str, guarded: bool, edge_errors: Callable[[], list[str]]
) -> None:
    async with trunk_edge(guarded=guarded) as edge:
        target = Target("trunk", transport, edge.bridge.local_addresses[transport], lambda: edge.calls)
        mismatches, calls = await _torture_with_legit_traffic(target, lambda done: legit_calls(edge, done))
        legit = [c for c in edge.calls if SIPP_CALL_ID.match(c.sip_call_id)]
        assert mismatches == [], "\n".join(mismatches)
        assert len(calls) >= 1 and len(legit) == len(calls)
        assert all(c.sip_call_id in edge.ends for c in legit)  # each SIPp call ended by its BYE
        assert edge_errors() == []


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_agent_edge_reacts_to_every_torture_message_as_the_rfc_says(
    transport: str, edge_errors: Callable[[], list[str]]
) -> None:
    async with agent_edge() as harness:
        target = Target(
            "agents",
            transport,
            harness.edge.local_addresses[transport],
            lambda: [],
            lambda user: [b.contact for b in harness.edge.bindings(user)],
        )
        mismatches, registrations = await _torture_with_legit_traffic(
            target, lambda done: legit_registrations(harness, done)
        )
        assert mismatches == [], "\n".join(mismatches)
        assert registrations >= 1
        assert edge_errors() == []


# --- the validator's verdict per message (what the answer must say, independent of the wiring) ---

_ANSWERED_ELSEWHERE = {"401", "405", "483", "501", "200", "call", "silence"}


@pytest.mark.parametrize("expect", MANIFEST, ids=lambda e: e.name)
def test_validation_verdict_matches_the_manifest(expect: Expectation) -> None:
    data = render(
        expect.name,
        edge=("127.0.0.1", 5060),
        via=("127.0.0.1", 40000),
        transport="udp",
        did=DID_NATIONAL,
        user=USER,
    )
    message = SipMessage.parse(data)
    if not isinstance(message, SipRequest):
        assert expect.reaction("trunk", "udp") == "silence"
        assert (start_line_problem(data) is not None) == (expect.name == "bigcode")
        return
    with receiving(data):
        problem = validate_request(message, stream=False)
    wanted = expect.reaction("trunk", "udp").split(",")[0]
    if wanted in _ANSWERED_ELSEWHERE:
        assert problem is None, problem
        return
    assert problem is not None
    assert problem.code == int(wanted), problem
    if expect.warning:
        assert expect.warning.lower() in problem.warning.lower()
    for name, value in expect.headers.items():
        assert (name, value) in problem.headers


# --- Max-Forwards (A25) ---


def _plain_invite(value: int, edge: Addr, peer: Addr, name: str) -> bytes:
    """inv2543 made RFC 3261-proper: a branch, Max-Forwards ``value``, Content-Length, Call-ID name.value."""
    data = render("inv2543", edge=edge, via=peer, transport="udp", did=DID_NATIONAL, user=USER)
    head, _, body = data.partition(b"\r\n\r\n")
    head = head.replace(b"inv2543.1717", f"{name}.{value}".encode())
    sent_by = f"{peer[0]}:{peer[1]}".encode()
    head = head.replace(sent_by, sent_by + f";branch=z9hG4bK{name}{value}".encode(), 1)
    head += f"\r\nMax-Forwards: {value}\r\nContent-Length: {len(body)}".encode()
    return head + b"\r\n\r\n" + body


async def test_max_forwards_zero_gets_483_and_one_still_reaches_the_flow() -> None:
    """A25: the hop budget running out is refused; the last hop (1) is ours to serve (RFC 3261 16.3)."""
    async with trunk_edge() as edge:
        outcomes = {}
        for value in (0, 1):
            peer = UdpPeer()
            try:
                data = _plain_invite(value, edge.udp, peer.addr, "maxfwd")
                await peer.send(data, edge.udp)
                (answer,) = await _finals(peer.answer, 1)
                await peer.send(ack_for(answer, request_uri_of(data), "udp", peer.addr), edge.udp)
                outcomes[value] = answer.status
            finally:
                peer.close()
        assert outcomes == {0: 483, 1: 486}
        assert [c.sip_call_id for c in edge.calls] == ["maxfwd.1@198.51.100.7"]
        refusals = [d["reason"] for k, d in edge.security if k == "security.max_forwards"]
        assert refusals == ["Max-Forwards is 0"]


# --- responses in a transaction of ours: unreason completes it, bigcode must not (3.1.1.12, 3.1.2.19) ---


async def test_our_bye_ignores_an_overlarge_code_and_completes_on_an_unusual_reason_phrase() -> None:
    """The edge's BYE meets a 4294967301 answer (discarded: the BYE is retransmitted), then a 200 whose
    reason phrase is arithmetic and UTF-8 (accepted: no more retransmissions, the call ends)."""
    async with trunk_edge() as edge:

        async def answer(call: InboundCall) -> None:
            call.answer(PCMU_ANSWER)

        edge.behaviour = answer
        peer = UdpPeer()
        try:
            data = _plain_invite(70, edge.udp, peer.addr, "byepeer")
            data = data.replace(
                b"<sip:caller@198.51.100.7>", f"<sip:caller@{peer.addr[0]}:{peer.addr[1]}>".encode()
            )
            await peer.send(data, edge.udp)
            (ok,) = await _finals(peer.answer, 1)
            assert ok.status == 200
            ack = ack_for(ok, f"sip:{edge.udp[0]}:{edge.udp[1]}", "udp", peer.addr)
            await peer.send(ack.replace(b"branch=z9hG4bKbyepeer70", b"branch=z9hG4bKbyepeerack"), edge.udp)
            (call,) = edge.calls
            call.hangup()
            bye = await peer.request("BYE", 3.0)
            assert bye is not None
            await peer.send(reply_to(bye, "SIP/2.0 4294967301 not a status code"), edge.udp)
            again = await peer.request("BYE", 3.0)
            assert again is not None, "the BYE transaction took 4294967301 for a final answer"
            reason = "2**3 * 5**2 двести — не простое"
            await peer.send(reply_to(again, f"SIP/2.0 200 = {reason}"), edge.udp)
            assert await peer.request("BYE", 2.5) is None  # completed: Timer E stopped
            await edge.wait_ended(1, within=5)
        finally:
            peer.close()


# --- size and count caps of the guard (A12) ---

_SMALL_SDP = b"v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n"


def _invite(
    edge: Addr,
    peer: Addr,
    transport: str,
    name: str,
    *,
    headers: Sequence[str] = (),
    body: bytes = b"",
    content_length: int | None = None,
) -> bytes:
    """An INVITE to the DID from ``peer``, with extra header lines and a body (SDP unless told)."""
    lines = [
        f"INVITE sip:{DID_NATIONAL}@{edge[0]}:{edge[1]} SIP/2.0",
        f"Via: SIP/2.0/{transport.upper()} {peer[0]}:{peer[1]};branch=z9hG4bK{name}",
        *headers,
        "Max-Forwards: 70",
        f"From: <sip:2125550100@caller.example.com>;tag={name}",
        f"To: <sip:{DID_NATIONAL}@{edge[0]}>",
        f"Call-ID: {name}.caps@198.51.100.7",
        "CSeq: 1 INVITE",
        "Contact: <sip:caller@198.51.100.7>",
        "Content-Type: application/sdp",
        f"Content-Length: {len(body) if content_length is None else content_length}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _audio_lines(count: int) -> bytes:
    return _SMALL_SDP + b"".join(f"m=audio {40000 + 2 * i} RTP/AVP 0\r\n".encode() for i in range(count))


def _oversize_cases(edge: Addr, peer: Addr, transport: str) -> dict[str, bytes]:
    """A12's messages: 500 Vias come one per line and comma-joined (50 lines of 10)."""
    hops = [f"SIP/2.0/{transport.upper()} hop{i}.example.com;branch=z9hG4bKhop{i}" for i in range(499)]
    joined = [", ".join(hops[i : i + 10]) for i in range(0, len(hops), 10)]
    padding = _audio_lines(1) + b"a=x:" + b"p" * 64_000
    return {
        "datagram64k": _invite(edge, peer, transport, "big64k", body=padding),
        "via500": _invite(edge, peer, transport, "via500", headers=[f"Via: {h}" for h in hops]),
        "via500joined": _invite(edge, peer, transport, "via500j", headers=[f"Via: {h}" for h in joined]),
        "header10k": _invite(edge, peer, transport, "hdr10k", headers=["X-Long: " + "h" * 10_000]),
        "mlines100": _invite(edge, peer, transport, "mlines100", body=_audio_lines(100)),
    }


async def test_guard_caps_drop_or_refuse_oversize_udp_while_calls_go_on() -> None:
    """A12 over UDP: over the datagram cap is dropped unseen; 100 m-lines are refused; never a call."""
    async with trunk_edge(guarded=True) as edge:
        done = asyncio.Event()
        traffic = asyncio.create_task(legit_calls(edge, done))
        reactions = {}
        try:
            for case in ("datagram64k", "via500", "via500joined", "header10k", "mlines100"):
                peer = UdpPeer()
                try:
                    data = _oversize_cases(edge.udp, peer.addr, "udp")[case]
                    await peer.send(data, edge.udp)
                    finals = await _finals(peer.answer, 1)
                    for answer in finals:
                        await peer.send(ack_for(answer, request_uri_of(data), "udp", peer.addr), edge.udp)
                    reactions[case] = ",".join(str(a.status) for a in finals) or "silence"
                finally:
                    peer.close()
        finally:
            done.set()
        async with asyncio.timeout(60):
            await traffic
        assert reactions == {
            "datagram64k": "silence",
            "via500": "silence",
            "via500joined": "silence",
            "header10k": "silence",
            "mlines100": "488",
        }
        assert not [c for c in edge.calls if not SIPP_CALL_ID.match(c.sip_call_id)]
        oversize = [d for k, d in edge.security if k == "security.oversize"]
        assert oversize and all(d["transport"] == "udp" for d in oversize)


async def test_guard_caps_answer_513_on_tcp_and_a_1mb_body_closes_the_connection() -> None:
    """A12 over TCP: header count/length caps get 513; a 1 MB body gets 513 and the connection ends."""
    async with trunk_edge(guarded=True) as edge:
        done = asyncio.Event()
        traffic = asyncio.create_task(legit_calls(edge, done))
        reactions = {}
        try:
            for case in ("via500", "via500joined", "header10k", "mlines100", "body1mb"):
                peer = await TcpPeer.open(edge.tcp)
                try:
                    if case == "body1mb":
                        body = _audio_lines(1) + b"a=x:" + b"p" * 1_000_000
                        data = _invite(edge.tcp, peer.addr, "tcp", "body1mb", body=body)
                    else:
                        data = _oversize_cases(edge.tcp, peer.addr, "tcp")[case]
                    with contextlib.suppress(ConnectionError):
                        await peer.send(data)
                    finals = await _finals(peer.answer, 1)
                    tokens = [str(a.status) for a in finals]
                    if await peer.closed_within(1.0):
                        tokens.append("close")
                    reactions[case] = ",".join(tokens) or "silence"
                finally:
                    await peer.close()
        finally:
            done.set()
        async with asyncio.timeout(60):
            await traffic
        # a cap breach may also end the connection (the design's "513 then close"); a 1 MB body must
        reactions = {k: v if k == "body1mb" else v.removesuffix(",close") for k, v in reactions.items()}
        assert reactions == {
            "via500": "513",
            "via500joined": "513",
            "header10k": "513",
            "mlines100": "488",
            "body1mb": "513,close",
        }
        assert not [c for c in edge.calls if not SIPP_CALL_ID.match(c.sip_call_id)]
        assert [d for k, d in edge.security if k == "security.oversize"]
