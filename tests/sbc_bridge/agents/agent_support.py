"""Harness for the agent listener tests: an AgentEdge on 127.0.0.1 with recorded callbacks.

A module of its own (not conftest) so other test folders can import it by a unique name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from helpline.sbc_bridge.agents import AgentCredentials, AgentEdge, AgentEdgeSettings, Binding, digest_ha1

REALM = "helpline"
PASSWORDS = {"1001": "s3cret-1001", "1002": "s3cret-1002"}
SDP_OFFER = (
    b"v=0\r\no=helpline 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 41000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n"
)


def credentials_for(passwords: dict[str, str], realm: str = REALM) -> dict[str, AgentCredentials]:
    return {
        ext: AgentCredentials(ext, digest_ha1(ext, realm, pw, "MD5"), digest_ha1(ext, realm, pw, "SHA-256"))
        for ext, pw in passwords.items()
    }


def answer_for(offer: bytes, direction: str = "sendrecv") -> bytes:
    """A PCMU answer from 127.0.0.1:41000 with the given direction (enough for a softphone)."""
    return (
        b"v=0\r\no=helpline 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 41000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
        + f"a={direction}\r\n".encode()
    )


@dataclass
class AgentHarness:
    edge: AgentEdge
    binding_events: list[tuple[str, tuple[Binding, ...]]] = field(default_factory=list)
    security: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def udp(self) -> tuple[str, int]:
        return self.edge.local_addresses["udp"]

    @property
    def tcp(self) -> tuple[str, int]:
        return self.edge.local_addresses["tcp"]

    def on_bindings(self, extension: str, bindings: tuple[Binding, ...]) -> None:
        self.binding_events.append((extension, bindings))
        asyncio.get_running_loop().create_task(self._wake())

    def on_security(self, kind: str, data: dict[str, Any]) -> None:
        self.security.append((kind, data))
        asyncio.get_running_loop().create_task(self._wake())

    async def _wake(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait_bindings(
        self, extension: str, predicate: Callable[[tuple[Binding, ...]], bool], timeout: float
    ) -> tuple[Binding, ...]:
        """Wait until ``extension``'s reported bindings satisfy ``predicate``; returns them."""
        try:
            async with asyncio.timeout(timeout), self.changed:
                while True:
                    current = self.edge.bindings(extension)
                    if predicate(current):
                        return current
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"bindings of {extension} never matched within {timeout}s: {self.edge.bindings(extension)}; "
                f"events: {self.binding_events}"
            ) from None

    async def wait_security(self, kind: str, timeout: float) -> dict[str, Any]:
        """The first security event of ``kind`` (past or future)."""
        return await self.wait_security_count(kind, 1, timeout)

    async def wait_security_count(self, kind: str, count: int, timeout: float) -> dict[str, Any]:
        """The ``count``-th security event of ``kind`` (past or future)."""
        try:
            async with asyncio.timeout(timeout), self.changed:
                while len(self.security_of(kind)) < count:
                    await self.changed.wait()
                return self.security_of(kind)[count - 1]
        except TimeoutError:
            raise AssertionError(
                f"fewer than {count} {kind} events within {timeout}s: {self.security}"
            ) from None

    def security_of(self, kind: str) -> list[dict[str, Any]]:
        return [data for k, data in self.security if k == kind]


def build_harness(passwords: dict[str, str] | None = None, **overrides: Any) -> AgentHarness:
    values: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "realm": REALM, "timer_t1": 0.1}
    values.update(overrides)
    settings = AgentEdgeSettings(**values)
    creds = credentials_for(passwords or PASSWORDS, settings.realm)
    holder: dict[str, AgentHarness] = {}
    edge = AgentEdge(
        settings,
        credentials=creds.get,
        on_bindings=lambda ext, b: holder["h"].on_bindings(ext, b),
        on_security=lambda kind, data: holder["h"].on_security(kind, data),
    )
    harness = AgentHarness(edge)
    holder["h"] = harness
    return harness
