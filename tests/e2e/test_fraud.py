"""Toll fraud and identity at the edge of a running service (attacks A18-A21), over the wire.

One ``helpline serve`` for the module, with the secure defaults of ``[security.outbound]`` (transfers to
numbers off, allowlist ``+1``) and three trunks: ``carrier`` (127.0.0.1, trusted), ``untrusted``
(127.0.0.2, outside the RFC 3325 trust domain) and ``outbound`` (127.0.0.3: the address a hairpin would
be relayed to). Agents are pjsua2 (transfers) or a hand-written digest client (outbound INVITEs).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.e2e.queue_support import (
    CALLER_TONE,
    QUICK_AGENTS,
    QueueFloor,
    api_client,
    ended_call,
    events_of,
    hears,
    milestones,
    state_is,
)
from tests.e2e.queue_support import make_agent as _make_agent
from tests.e2e.server import RunningServer
from tests.sbc_bridge.agents.raw_agent import RawAgent, digest_answer
from tests.support.rtp_probe import RtpProbe, make_sdp_offer
from tests.support.sip_uac import SipMessage, SipUac, build_message
from tests.support.sipp import require_binary

FLOOR = QueueFloor(sip_port=5700, agent_port=5710, http_port=8170)
SUPPORT, TRANSFER, DTMF = "+18005550106", "+18005550105", "+18005550101"
HAIRPIN_HOST = "127.0.0.3"  # the outbound trunk's address: nothing may ever be sent there
EXTRA = f"""
[[trunks]]
name = "untrusted"
sources = ["127.0.0.2/32"]
trusted = false
country_code = "1"
national_prefix = "1"
international_prefix = "011"
dids = {{ "{DTMF}" = "dtmf_branch" }}

[[trunks]]
name = "outbound"
sources = ["{HAIRPIN_HOST}/32"]
country_code = "1"
national_prefix = "1"
international_prefix = "011"

[queues.support]
ring_timeout_s = 4
wrapup_s = 1
"""
_extensions = itertools.count(7001)


@pytest.fixture(scope="module")
def fserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    require_binary("espeak-ng")
    env = QUICK_AGENTS
    yield from FLOOR.serve(tmp_path_factory.mktemp("helpline-fraud"), EXTRA, env)


@pytest.fixture
async def api(fserver: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async for client in api_client(fserver):
        yield client


async def security_events(server: RunningServer, type: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (
        await asyncio.to_thread(server.get, "/api/security-events", type=type)
    )["items"]
    return items


async def wait_security(
    server: RunningServer, type: str, match: dict[str, Any], timeout: float = 5.0
) -> dict[str, Any]:
    """The stored ``type`` event whose data holds every item of ``match`` (events are batched)."""
    seen: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                seen = await security_events(server, type)
                for event in seen:
                    if all(event["data"].get(k) == v for k, v in match.items()):
                        return event
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"no {type} event with {match} in {timeout}s: {seen[:5]}") from None


# -- a loopback capture: every packet any process sends in the test's namespace ----------------------


@dataclass(frozen=True)
class Packet:
    proto: str
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes


class LoopbackCapture:
    """IPv4 UDP and TCP packets on ``lo`` through an AF_PACKET socket (root, in the namespace).

    Each packet on ``lo`` is seen twice (outgoing and incoming); only the incoming copy is kept.
    """

    def __init__(self) -> None:
        self.packets: list[Packet] = []
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self._sock.bind(("lo", 0))
        self._sock.setblocking(False)

    def start(self) -> None:
        asyncio.get_running_loop().add_reader(self._sock.fileno(), self._drain)

    def close(self) -> None:
        self._drain()
        asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()

    def _drain(self) -> None:
        while True:
            try:
                frame, meta = self._sock.recvfrom(65535)
            except BlockingIOError:
                return
            if meta[2] == socket.PACKET_OUTGOING:
                continue
            packet = self._parse(frame)
            if packet is not None:
                self.packets.append(packet)

    @staticmethod
    def _parse(frame: bytes) -> Packet | None:
        if len(frame) < 34 or frame[12:14] != b"\x08\x00":  # Ethernet II, IPv4
            return None
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        proto = ip[9]
        src_ip, dst_ip = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
        body = ip[ihl:struct.unpack("!H", ip[2:4])[0]]
        if proto == 17 and len(body) >= 8:
            sport, dport = struct.unpack("!HH", body[:4])
            return Packet("udp", (src_ip, sport), (dst_ip, dport), body[8:])
        if proto == 6 and len(body) >= 20:
            sport, dport = struct.unpack("!HH", body[:4])
            return Packet("tcp", (src_ip, sport), (dst_ip, dport), body[(body[12] >> 4) * 4:])
        return None

    def invites(self) -> list[Packet]:
        return [p for p in self.packets if p.payload.startswith(b"INVITE ")]


class Listener(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[tuple[bytes, tuple[str, int]]] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append((data, addr))


@contextlib.asynccontextmanager
async def watched_trunk() -> AsyncIterator[tuple[Listener, list[tuple[str, int]]]]:
    """UDP and TCP listeners on the outbound trunk's SIP port: what arrives there, and TCP peers."""
    loop = asyncio.get_running_loop()
    listener = Listener()
    transport, _ = await loop.create_datagram_endpoint(lambda: listener, local_addr=(HAIRPIN_HOST, 5060))
    connections: list[tuple[str, int]] = []

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer.get_extra_info("peername"))
        writer.close()

    server = await asyncio.start_server(accepted, HAIRPIN_HOST, 5060)
    try:
        yield listener, connections
    finally:
        transport.close()
        server.close()
        await server.wait_closed()


# -- A19: trunk-to-trunk transit -------------------------------------------------------------------


async def test_trunk_hairpin_is_refused_and_nothing_leaves_toward_any_address(fserver: RunningServer) -> None:
    """INVITEs from a trunk for numbers that are not ours, some pointed at the other trunk's host, get
    404/403; our own DID addressed to a foreign host is answered here. No INVITE leaves Helpline."""
    capture = LoopbackCapture()
    capture.start()
    attempts = [
        (f"sip:+447700900123@127.0.0.1:{fserver.sip_port}", 404),
        (f"sip:+447700900123@{HAIRPIN_HOST}:5060", 404),  # relay me to the other trunk
        (f"sip:+882123456789@{HAIRPIN_HOST}:5060;user=phone", 404),  # premium, international network
        (f"sip:011447700900123@{HAIRPIN_HOST}", 404),  # international via the dial plan
        (f"sip:+18005559999@{HAIRPIN_HOST}:5060", 404),  # a domestic number that is not one of our DIDs
        (f"sip:+79161234567@{HAIRPIN_HOST}:5060", 403),  # a blocked country
    ]
    try:
        async with watched_trunk() as (listener, connections), await SipUac.open() as uac:
            call_ids = []
            for target, expected in attempts:
                call = await uac.invite(
                    target, make_sdp_offer(40000), remote=("127.0.0.1", fserver.sip_port)
                )
                assert call.status == expected, (target, call.responses)
                call_ids.append(call.call_id)
            ours = await uac.invite(
                f"sip:{DTMF}@{HAIRPIN_HOST}:5060", make_sdp_offer(40000),
                remote=("127.0.0.1", fserver.sip_port),
            )
            assert ours.status == 200, "our own DID is answered by its flow, whatever host the URI names"
            assert await ours.bye() == 200
            await asyncio.sleep(2.0)  # time for anything that would be relayed to go out
            client_port = uac.local_port
    finally:
        capture.close()
    invites = capture.invites()
    sent_by_us = [p for p in invites if p.src == ("127.0.0.1", client_port)]
    assert len(sent_by_us) >= len(attempts) + 1, "the capture must see the test's own INVITEs"
    assert [p for p in invites if p.src != ("127.0.0.1", client_port)] == []
    assert [p for p in capture.packets if p.dst[0] == HAIRPIN_HOST] == []
    assert listener.received == [] and connections == []
    relay = await ended_call(fserver, call_ids[1])
    assert (relay["sip_code"], relay["disposition"], relay["trunk"]) == (404, "refused", "carrier")


# -- A20 / A21: identity only from the trust domain ------------------------------------------------


def passport(attest: str) -> str:
    """An RFC 8224 Identity header value with a PASSporT carrying ``attest`` (signature not checked)."""

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    header = part({"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": "https://cert.example/c.pem"})
    claims = part({"attest": attest, "dest": {"tn": ["18005550101"]}, "iat": 1700000000,
                   "orig": {"tn": "15551230001"}, "origid": "7f4b"})
    return f"{header}.{claims}.c2lnbmF0dXJl;info=<https://cert.example/c.pem>;alg=ES256;ppt=shaken"


IDENTITY_HEADERS = {
    "P-Asserted-Identity": "\"Bank\" <sip:+18005550000@127.0.0.1;user=phone;verstat=TN-Validation-Passed>",
    "Remote-Party-ID": "\"Bank\" <sip:+18005550000@127.0.0.1>;party=calling;screen=yes",
    "Identity": passport("A"),
}


async def call_with_identity(host: str, server: RunningServer, headers: dict[str, str]) -> dict[str, Any]:
    async with await SipUac.open(host=host) as uac:
        call = await uac.invite(
            f"sip:{DTMF}@127.0.0.1:{server.sip_port}", make_sdp_offer(40000), headers=headers
        )
        assert call.status == 200, call.responses
        assert await call.bye() == 200
    detail = await ended_call(server, call.call_id)
    detail["sip_call_id"] = call.call_id
    return detail


async def test_identity_from_an_untrusted_trunk_is_stripped_and_reported(fserver: RunningServer) -> None:
    detail = await call_with_identity("127.0.0.2", fserver, IDENTITY_HEADERS)
    assert detail["trunk"] == "untrusted"
    assert detail["pai"] is None and detail["verstat"] is None
    assert detail["caller"] == "+15551230001"  # the From, not the asserted identity
    event = await wait_security(fserver, "security.identity_stripped", {"sip_call_id": detail["sip_call_id"]})
    stripped = set(event["data"]["stripped"])
    assert {"P-Asserted-Identity", "Remote-Party-ID", "verstat"} <= stripped, event


@pytest.mark.parametrize(("verstat", "identity", "stored"), [
    ("TN-Validation-Passed", "A", "TN-Validation-Passed-A"),  # attestation from the PASSporT
    ("TN-Validation-Passed-B", None, "TN-Validation-Passed-B"),
    ("tn-validation-failed", "A", "TN-Validation-Failed"),  # a failed check has no attestation
    ("No-TN-Validation", None, "No-TN-Validation"),
    ("Trust-Me-Validated", None, None),  # not a verstat value: not stored
])
async def test_identity_from_the_trusted_trunk_is_kept_and_verstat_reaches_the_cdr(
    fserver: RunningServer, verstat: str, identity: str | None, stored: str | None
) -> None:
    headers = {"P-Asserted-Identity":
               f"\"Jane\" <sip:+15551230001@127.0.0.1;user=phone;verstat={verstat}>"}
    if identity is not None:
        headers["Identity"] = passport(identity)
    detail = await call_with_identity("127.0.0.1", fserver, headers)
    assert detail["trunk"] == "carrier"
    assert detail["pai"] is not None and "+15551230001" in detail["pai"]
    assert detail["verstat"] == stored
    stripped = await security_events(fserver, "security.identity_stripped")
    assert all(e["data"].get("sip_call_id") != detail["sip_call_id"] for e in stripped)


# -- A18: transfers to numbers --------------------------------------------------------------------


async def test_ivr_transfer_to_a_number_is_refused_by_default(fserver: RunningServer) -> None:
    """The flow's ``transfer`` node to +15551239999: no REFER leaves, the flow takes ``failed``."""
    async with await SipUac.open() as uac, await RtpProbe.open() as probe:
        call = await uac.invite(
            f"sip:{TRANSFER}@127.0.0.1:{fserver.sip_port}", make_sdp_offer(probe.local_port), refer_status=200
        )
        assert call.status == 200
        assert await call.wait_remote_bye(15), "the flow's failed branch hangs up"
        assert all(r.method != "REFER" for r in call.requests_received)
    detail = await ended_call(fserver, call.call_id)
    assert milestones(detail) == ["transfer_failed"]
    (transfer,) = [e["data"] for e in events_of(detail, "ivr.transfer")]
    assert transfer["result"] == "failed"
    (refused,) = [e["data"] for e in events_of(detail, "security.fraud_refused")]
    assert refused["rule"] == "number_transfer" and refused["destination"] == "+15551239999", refused
    assert detail["disposition"] == "completed"
    await wait_security(fserver, "security.fraud_refused", {"kind": "transfer", "target": "+15551239999"})


async def make_agent(api: httpx.AsyncClient) -> tuple[str, str]:
    return await _make_agent(api, str(next(_extensions)), skills={"support": 2})


async def test_agent_refer_to_a_number_gets_403_and_the_call_goes_on(
    fserver: RunningServer, api: httpx.AsyncClient
) -> None:
    extension, password = await make_agent(api)
    agent = await FLOOR.staffed_pjsua(api, extension, password, echo=True)
    try:
        async with await SipUac.open() as uac, await RtpProbe.open() as probe:
            call = await FLOOR.call_in(uac, probe, SUPPORT, refer_status=200)
            await agent.wait_event(state_is("CONFIRMED"), 10)
            await hears(probe, CALLER_TONE, agent.events)
            agent.command("transfer", target=f"sip:+88212345678@127.0.0.1:{FLOOR.agent_port}")
            refused = await agent.wait_event(lambda e: e["event"] == "xfer_status" and e["final"], 10)
            assert refused["code"] == 403, refused
            await asyncio.sleep(0.5)
            await hears(probe, CALLER_TONE, agent.events)  # still talking
            assert not agent.matching(state_is("DISCONNECTED")), agent.events
            assert all(r.method not in ("REFER", "BYE") for r in call.requests_received)
            assert await call.bye() == 200
            await agent.wait_event(state_is("DISCONNECTED"), 10)
            await probe.stop_audio()
    finally:
        await agent.stop()
    detail = await ended_call(fserver, call.call_id)
    assert detail["disposition"] == "completed"
    (fraud,) = [e["data"] for e in events_of(detail, "security.fraud_refused")]
    assert fraud["agent"] == extension and fraud["destination"] == "+88212345678", fraud
    assert fraud["rule"] == "number_transfer", fraud
    (refusal,) = [e["data"] for e in events_of(detail, "queue.transfer_refused")]
    assert "refer_to_numbers" in refusal["reason"], refusal


# -- A18: agents placing calls ---------------------------------------------------------------------


class DigestCaller:
    """An agent's phone placing INVITEs with its digest credentials (no REGISTER needed)."""

    def __init__(self, agent: RawAgent, extension: str, password: str) -> None:
        self.agent = agent
        self.extension = extension
        self.password = password

    def _invite(self, uri: str, call_id: str, cseq: int, auth: str | None) -> tuple[bytes, str]:
        branch = f"z9hG4bK{os.urandom(6).hex()}"
        host, _ = self.agent.registrar
        headers = [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{self.agent.port};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:{self.extension}@{host}>;tag={call_id[:8]}"),
            ("To", f"<{uri}>"),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} INVITE"),
            ("Contact", f"<sip:{self.extension}@127.0.0.1:{self.agent.port}>"),
            ("P-Asserted-Identity", "<sip:+18005550000@127.0.0.1>"),  # not believed from an agent
        ]
        if auth:
            headers.append(("Authorization", auth))
        return build_message(f"INVITE {uri} SIP/2.0", headers, b""), branch

    def _ack(self, uri: str, response: SipMessage) -> None:
        headers = [
            ("Via", response.header("via") or ""),
            ("Max-Forwards", "70"),
            ("From", response.header("from") or ""),
            ("To", response.header("to") or ""),
            ("Call-ID", response.call_id),
            ("CSeq", f"{response.cseq[0]} ACK"),
        ]
        self.agent.send(build_message(f"ACK {uri} SIP/2.0", headers))

    async def call(self, number: str) -> tuple[SipMessage, str]:
        """INVITE ``number``, answer the challenge; the final response to the authenticated INVITE."""
        host, port = self.agent.registrar
        uri = f"sip:{number}@{host}:{port}"
        call_id = f"{os.urandom(8).hex()}@fraud-agent"
        data, branch = self._invite(uri, call_id, 1, None)
        challenge = await self.agent.request(data, branch)
        assert challenge.status == 401, challenge.start_line
        self._ack(uri, challenge)
        auth = digest_answer(RawAgent.challenge(challenge, "SHA-256"), method="INVITE", uri=uri,
                             username=self.extension, password=self.password)
        data, branch = self._invite(uri, call_id, 2, auth)
        final = await self.agent.request(data, branch)
        self._ack(uri, final)
        return final, call_id


async def test_agent_outbound_invites_are_refused_by_policy_with_the_reason(
    fserver: RunningServer, api: httpx.AsyncClient
) -> None:
    """Outbound calling is not built: every INVITE gets 403, but the policy decides first, so a
    premium destination, a blocked country and a burst over the per-agent rate are each reported."""
    extension, password = await make_agent(api)
    agent = await RawAgent.open(("127.0.0.1", FLOOR.agent_port))
    try:
        phone = DigestCaller(agent, extension, password)
        expected = [
            ("+88112345678", "not_allowed"),
            ("+19005550100", "high_cost"),
            ("+79161234567", "blocked_country"),
            ("0123", "not_e164"),
        ]
        for number, rule in expected:
            final, call_id = await phone.call(number)
            assert final.status == 403, final.start_line
            event = await wait_security(fserver, "security.fraud_refused", {"sip_call_id": call_id})
            assert event["data"]["rule"] == rule and event["data"]["agent"] == extension, event
        allowed: list[str] = []
        for _ in range(6):  # the default budget: 6 calls per agent per minute
            final, call_id = await phone.call("+12125550100")
            assert final.status == 403 and "not enabled" in final.reason, final.start_line
            allowed.append(call_id)
        final, call_id = await phone.call("+12125550100")
        assert final.status == 403
        event = await wait_security(fserver, "security.fraud_refused", {"sip_call_id": call_id})
        assert event["data"]["rule"] == "rate", event
        stored = await security_events(fserver, "security.fraud_refused")
        refused_ids = {e["data"].get("sip_call_id") for e in stored}
        assert not refused_ids & set(allowed), "an allowed destination is not a fraud refusal"
        # no INVITE from the edge toward the dialled numbers: the agent got nothing but responses
        assert agent.received(lambda m: not m.is_response and m.method == "INVITE") == []
    finally:
        agent.close()
