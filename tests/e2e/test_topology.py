"""Topology hiding (A26): nothing the server sends to the carrier or to an agent names its inside.

The server binds SIP, the agent listener and media to 127.0.0.1 (its internal address) and advertises
127.0.0.2 (the public one). The peers sit on addresses of their own (the carrier on 127.0.0.5, the agent
on 127.0.0.6) and write the public address in everything they send, while their datagrams go to
127.0.0.1, as through the NAT in front of a real deployment. So any ``127.0.0.1`` in a message the
server sent, in any header (Via, Record-Route, Contact, Call-ID...), in the request line or in the SDP
(``o=``, ``c=``), is a leak of the server's own making. Product strings are leaks too: no ``Server``
or ``User-Agent`` header, and no "helpline", "aiosipua" or "python" in any header value or SDP line.

Every message of a full call is captured on both sides: OPTIONS and an unknown number from the
carrier, the agent's REGISTER (challenge and success), the server's qualify OPTIONS, the call
(INVITE to 200, ACK), a re-INVITE from the carrier, and the agent's BYE relayed as the server's own
BYE to the carrier.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.queue_support import QUICK_AGENTS, QueueFloor, api_client, make_agent, presence, wait_agent
from tests.e2e.server import RunningServer
from tests.sbc_bridge.agents.raw_agent import RawAgent, _Protocol
from tests.support.rtp_probe import RtpProbe, make_sdp_offer
from tests.support.sip_uac import SipUac, build_message, parse_message

FLOOR = QueueFloor(sip_port=5620, agent_port=5630, http_port=8161)
INTERNAL, PUBLIC = "127.0.0.1", "127.0.0.2"
CARRIER_HOST, AGENT_HOST = "127.0.0.5", "127.0.0.6"
DID, UNKNOWN_DID = "+18005550199", "+18005550198"
PRODUCT_WORDS = ("helpline", "aiosipua", "python")
CONFIG = f"""
[queues.support]
ring_timeout_s = 5
wrapup_s = 1

[[trunks]]
name = "public-carrier"
sources = ["{CARRIER_HOST}/32"]
country_code = "1"
national_prefix = "1"
international_prefix = "011"
dids = {{ "{DID}" = "queue_support" }}
"""


@pytest.fixture(scope="module")
def tserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    env = {
        "HELPLINE_SIP__ADVERTISED_HOST": PUBLIC,
        "HELPLINE_AGENTS__ADVERTISED_HOST": PUBLIC,
        "HELPLINE_MEDIA__ADVERTISED_HOST": PUBLIC,
        **QUICK_AGENTS,
        # The digest realm is the operator's to name (README); the default one names the product.
        "HELPLINE_AGENTS__REALM": "contact.example.com",
    }
    yield from FLOOR.serve(tmp_path_factory.mktemp("helpline-topology"), CONFIG, env)


@pytest.fixture
async def api(tserver: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async for client in api_client(tserver):
        yield client


class CapturingUac(SipUac):
    """The carrier: a ``SipUac`` that keeps every datagram the server sent it."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.captured: list[bytes] = []

    def _on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if data.strip():
            self.captured.append(data)
        super()._on_datagram(data, addr)


class NattedAgent(RawAgent):
    """The hand-written agent on ``AGENT_HOST``, registering with the server's public address.

    ``RawAgent`` writes its own address as 127.0.0.1; here that text becomes ``AGENT_HOST`` before
    it leaves, so the only 127.0.0.1 on the agent's side of the wire is the server's doing.
    """

    internal: tuple[str, int]

    @classmethod
    async def open_natted(cls, public: tuple[str, int], internal: tuple[str, int]) -> NattedAgent:
        holder: dict[str, RawAgent] = {}
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Protocol(holder), local_addr=(AGENT_HOST, 0))
        agent = cls(transport, public)
        agent.internal = internal
        holder["agent"] = agent
        return agent

    def send(self, data: bytes, addr: tuple[str, int] | None = None) -> None:
        data = data.replace(INTERNAL.encode(), AGENT_HOST.encode())
        self.sent.append(data)
        self.transport.sendto(data, addr or self.internal)


def leaks(raw: bytes) -> list[str]:
    """What in one message names the server's internal address or the product, each with its place."""
    message = parse_message(raw)
    found = []
    if INTERNAL in message.start_line:
        found.append(f"request line {message.start_line!r}")
    for name, value in message.headers:
        if name in ("server", "user-agent"):
            found.append(f"{name}: {value} (a product header)")
        if INTERNAL in value:
            found.append(f"{name}: {value}")
        if any(word in value.lower() for word in PRODUCT_WORDS):
            found.append(f"{name}: {value} (a product string)")
    for line in message.text_body.splitlines():
        if INTERNAL in line:
            found.append(f"SDP {line!r}")
        if any(word in line.lower() for word in PRODUCT_WORDS):
            found.append(f"SDP {line!r} (a product string)")
    return found


def leak_kind(leak: str) -> str:
    return "product" if leak.endswith(("(a product header)", "(a product string)")) else "address"


def kinds(captured: list[bytes]) -> set[str]:
    """'INVITE', '200 INVITE'... for each message: proves the capture holds what the test drove."""
    out = set()
    for raw in captured:
        message = parse_message(raw)
        out.add(f"{message.status} {message.method}" if message.is_response else message.method)
    return out


def options_request(uac: SipUac) -> bytes:
    branch = f"z9hG4bK{uuid.uuid4().hex[:16]}"
    return build_message(f"OPTIONS sip:{PUBLIC}:{FLOOR.sip_port} SIP/2.0", [
        ("Via", f"SIP/2.0/UDP {CARRIER_HOST}:{uac.local_port};branch={branch};rport"),
        ("Max-Forwards", "70"),
        ("From", f"<sip:carrier@{CARRIER_HOST}>;tag={uuid.uuid4().hex[:8]}"),
        ("To", f"<sip:{PUBLIC}:{FLOOR.sip_port}>"),
        ("Call-ID", f"{uuid.uuid4().hex}@{CARRIER_HOST}"),
        ("CSeq", "1 OPTIONS"),
    ])


_captured: dict[str, list[bytes]] = {}


async def captured_call(api: httpx.AsyncClient) -> dict[str, list[bytes]]:
    """Drive the whole call once per module; every message the server sent, by side."""
    if _captured:
        return _captured
    extension, password = await make_agent(api, "3201", skills={"support": 1})
    agent = await NattedAgent.open_natted((PUBLIC, FLOOR.agent_port), (INTERNAL, FLOOR.agent_port))
    agent.on_invite = "answer"
    uac = await CapturingUac.open(CARRIER_HOST)
    assert isinstance(uac, CapturingUac)
    try:
        registered = await agent.register(extension, password, expires=300)
        assert registered.status == 200, registered.start_line
        await wait_agent(api, extension, reachable=True)  # the server's qualify OPTIONS were answered
        await presence(api, extension, "ready")
        async with await RtpProbe.open(CARRIER_HOST) as media:
            trunk = (INTERNAL, FLOOR.sip_port)
            uac.send_raw(options_request(uac), trunk)
            assert (await uac.next_unmatched(5)).status == 200
            offer = make_sdp_offer(media.local_port, host=CARRIER_HOST)
            unknown = await uac.invite(f"sip:{UNKNOWN_DID}@{PUBLIC}:{FLOOR.sip_port}", offer, remote=trunk)
            assert unknown.status == 404, unknown.responses
            call = await uac.invite(f"sip:{DID}@{PUBLIC}:{FLOOR.sip_port}", offer, remote=trunk)
            assert call.status == 200 and call.media is not None, call.responses
            assert call.media.host == PUBLIC  # the answer's c= is the advertised address
            media.set_remote(INTERNAL, call.media.port, codec="PCMU")  # through the "NAT"
            media.start_audio()
            invite = await agent.wait_for(lambda m: not m.is_response and m.method == "INVITE", 10)
            await agent.wait_for(lambda m: not m.is_response and m.method == "ACK", 10)
            refresh = make_sdp_offer(media.local_port, host=CARRIER_HOST, session_version=2)
            assert await call.reinvite(refresh) == 200
            bye, branch = agent.in_dialog_bytes(invite, "BYE", 2)
            agent.send(bye)
            await agent.wait_for(lambda m: m.is_response and m.branch == branch, 5)
            assert await call.wait_remote_bye(10), "the agent's BYE never reached the carrier"
            await media.stop_audio()
    finally:
        agent.close()
        uac.close()
    to_agent = [m.raw for m, _ in agent.messages]
    assert {"OPTIONS", "INVITE", "ACK", "401 REGISTER", "200 REGISTER", "200 BYE"} <= kinds(to_agent)
    assert {"200 OPTIONS", "404 INVITE", "200 INVITE", "BYE"} <= kinds(uac.captured)
    _captured.update(carrier=uac.captured, agent=to_agent)
    return _captured


def leaks_of_kind(captured: dict[str, list[bytes]], kind: str) -> list[str]:
    """The leaks of one kind ("address" or "product") in everything captured, each with its place."""
    out = []
    for side, messages in captured.items():
        for raw in messages:
            first = raw.split(b"\r\n", 1)[0].decode(errors="replace")
            out += [f"{side} <- {first}: {leak}" for leak in leaks(raw) if leak_kind(leak) == kind]
    return out


async def test_no_message_to_the_carrier_or_an_agent_names_the_internal_address(
    tserver: RunningServer, api: httpx.AsyncClient
) -> None:
    leaked = leaks_of_kind(await captured_call(api), "address")
    assert leaked == [], "\n".join(leaked)


async def test_no_message_to_the_carrier_or_an_agent_names_the_product(
    tserver: RunningServer, api: httpx.AsyncClient
) -> None:
    leaked = leaks_of_kind(await captured_call(api), "product")
    assert leaked == [], "\n".join(leaked)


def test_the_checker_sees_each_kind_of_leak() -> None:
    """An internal address in a Via and an SDP c=, a product Call-ID, a Server header: each found."""
    sdp = b"v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    leaky = build_message("SIP/2.0 200 OK", [
        ("Via", "SIP/2.0/UDP 127.0.0.1:5620;branch=z9hG4bK1"), ("Call-ID", "1@helpline"),
        ("Server", "x"), ("CSeq", "1 INVITE")], sdp)
    kinds_found = {(leak.split(":")[0].split(" ")[0], leak_kind(leak)) for leak in leaks(leaky)}
    assert kinds_found == {("via", "address"), ("call-id", "product"), ("server", "product"),
                           ("SDP", "address")}, leaks(leaky)
    clean = build_message("SIP/2.0 200 OK", [
        ("Via", "SIP/2.0/UDP 127.0.0.5:5620;branch=z9hG4bK1;received=127.0.0.5"), ("Call-ID", "1@x"),
        ("CSeq", "1 INVITE")], sdp.replace(b"127.0.0.1", b"127.0.0.2"))
    assert leaks(clean) == []
