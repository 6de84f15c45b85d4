"""Harness for the SIP trunk edge tests: a TrunkBridge on 127.0.0.1 with a scriptable handler.

A module of its own (not conftest) so tests import it by a unique name."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpline.sbc_bridge import (
    CallEnd,
    EdgePolicy,
    InboundCall,
    RefusedCall,
    SipSettings,
    TrunkBridge,
    TrunkConfig,
)

SCENARIOS = Path(__file__).parent / "scenarios"
DID = "+12125550199"
DID_NATIONAL = "2125550199"
PCMU_ANSWER = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    b"a=sendrecv\r\n"
)

Behaviour = Callable[[InboundCall], Awaitable[None]]


async def answer_and_hold(call: InboundCall) -> None:
    call.ringing()
    call.answer(PCMU_ANSWER)


def trunk(**overrides: Any) -> TrunkConfig:
    values: dict[str, Any] = {
        "name": "carrier",
        "sources": ("127.0.0.1/32",),
        "country_code": "1",
        "national_prefix": "1",
        "international_prefix": "011",
        "dids": {DID: "main-flow"},
    }
    values.update(overrides)
    return TrunkConfig(**values)


@dataclass
class Edge:
    bridge: TrunkBridge
    behaviour: Behaviour = answer_and_hold
    calls: list[InboundCall] = field(default_factory=list)
    ends: dict[str, CallEnd] = field(default_factory=dict)
    dtmf: list[tuple[str, int]] = field(default_factory=list)
    reoffers: list[bytes] = field(default_factory=list)
    security: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    refused: list[RefusedCall] = field(default_factory=list)
    ended_event: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def udp(self) -> tuple[str, int]:
        return self.bridge.local_addresses["udp"]

    @property
    def tcp(self) -> tuple[str, int]:
        return self.bridge.local_addresses["tcp"]

    def security_types(self) -> list[str]:
        return [kind for kind, _ in self.security]

    async def wait_ended(self, count: int = 1, within: float = 15.0) -> None:
        async with asyncio.timeout(within):
            while len(self.ends) < count:
                self.ended_event.clear()
                await self.ended_event.wait()


def build_edge(
    settings: SipSettings | None = None,
    trunks: list[TrunkConfig] | None = None,
    policy: EdgePolicy | None = None,
) -> Edge:
    holder: dict[str, Edge] = {}

    async def on_call(call: InboundCall) -> None:
        edge = holder["edge"]
        edge.calls.append(call)

        def ended(end: CallEnd) -> None:
            edge.ends[call.sip_call_id] = end
            edge.ended_event.set()

        def reoffer(offer: bytes) -> bytes | None:
            edge.reoffers.append(offer)
            if b"a=sendonly" in offer:
                return PCMU_ANSWER.replace(b"a=sendrecv", b"a=recvonly")
            return PCMU_ANSWER

        call.on_ended = ended
        call.on_dtmf = lambda digit, ms: edge.dtmf.append((digit, ms))
        call.on_reoffer = reoffer
        await edge.behaviour(call)

    bridge = TrunkBridge(
        settings or SipSettings(host="127.0.0.1", port=0),
        trunks if trunks is not None else [trunk()],
        policy or EdgePolicy(blocked_countries=("+7", "+850")),
        on_call,
        lambda kind, data: holder["edge"].security.append((kind, data)),
        lambda info: holder["edge"].refused.append(info),
    )
    edge = Edge(bridge)
    holder["edge"] = edge
    return edge
