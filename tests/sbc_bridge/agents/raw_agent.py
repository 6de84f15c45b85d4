"""A hand-written UDP SIP agent for the registrar and dialer tests.

It is the *peer*, not the product: it computes digest answers itself (MD5 or SHA-256, any
nonce-count), so tests can replay, go stale or lie about passwords, and it answers INVITEs as
scripted while recording every message it receives, so tests can assert what reached the agent
(the ACK for a 486, no further retransmissions).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import Callable
from typing import Any

from tests.support.sip_uac import SipMessage, build_message, parse_message

Addr = tuple[str, int]
ANSWER_SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 42000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def digest_params(value: str) -> dict[str, str]:
    """The parameters of a WWW-Authenticate / Authorization value (quotes removed)."""
    _, _, rest = value.partition(" ")
    return {k.lower(): v for k, v in re.findall(r'([A-Za-z-]+)="?([^",]*)"?', rest)}


def digest_answer(
    challenge: dict[str, str],
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    nc: int = 1,
    cnonce: str = "0a4f113b",
) -> str:
    """An Authorization value answering ``challenge`` (qop=auth) with the given nonce-count."""
    algorithm = challenge.get("algorithm", "MD5")
    h = hashlib.sha256 if algorithm.upper() == "SHA-256" else hashlib.md5
    realm, nonce = challenge["realm"], challenge["nonce"]
    ha1 = h(f"{username}:{realm}:{password}".encode()).hexdigest()
    ha2 = h(f"{method}:{uri}".encode()).hexdigest()
    nc_text = f"{nc:08x}"
    response = h(f"{ha1}:{nonce}:{nc_text}:{cnonce}:auth:{ha2}".encode()).hexdigest()
    return (
        f'Digest username="{username}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm={algorithm}, qop=auth, nc={nc_text}, cnonce="{cnonce}"'
    )


class RawAgent:
    """One UDP socket acting as a registered agent.

    ``on_invite`` decides how to answer a new INVITE: ``"busy"`` (180 then 486), ``"answer"``
    (180 then 200 with SDP), ``"ring"`` (180 only), ``"silent"`` (nothing). ``answer_options``
    controls whether OPTIONS (qualify) get a 200.
    """

    def __init__(self, transport: asyncio.DatagramTransport, registrar: Addr) -> None:
        self.transport = transport
        self.registrar = registrar
        self.port: int = transport.get_extra_info("sockname")[1]
        self.messages: list[tuple[SipMessage, Addr]] = []
        self.sent: list[bytes] = []
        self.on_invite = "busy"
        self.answer_options = True
        self.cross_cancel = False
        self.invites: dict[str, tuple[SipMessage, Addr]] = {}
        self._changed = asyncio.Condition()
        self._cseq = 0
        self.call_id = f"{os.urandom(6).hex()}@raw-agent"
        self.from_tag = os.urandom(4).hex()
        self.to_tags: dict[str, str] = {}

    @classmethod
    async def open(cls, registrar: Addr) -> RawAgent:
        loop = asyncio.get_running_loop()
        holder: dict[str, RawAgent] = {}
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(holder),
            local_addr=("127.0.0.1", 0),
        )
        agent = cls(transport, registrar)
        holder["agent"] = agent
        return agent

    def close(self) -> None:
        self.transport.close()

    # --- sending ---

    def send(self, data: bytes, addr: Addr | None = None) -> None:
        self.sent.append(data)
        self.transport.sendto(data, addr or self.registrar)

    def register_bytes(
        self,
        extension: str,
        *,
        contacts: list[str] | None = None,
        expires: int | None = None,
        authorization: str | None = None,
        cseq: int | None = None,
        call_id: str | None = None,
        branch: str | None = None,
    ) -> tuple[bytes, str]:
        """A REGISTER for ``extension``; returns (bytes, branch)."""
        if cseq is None:
            self._cseq += 1
            cseq = self._cseq
        branch = branch or f"z9hG4bK{os.urandom(6).hex()}"
        host, port = self.registrar
        headers = [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:{extension}@{host}>;tag={self.from_tag}"),
            ("To", f"<sip:{extension}@{host}>"),
            ("Call-ID", call_id or self.call_id),
            ("CSeq", f"{cseq} REGISTER"),
        ]
        for contact in contacts if contacts is not None else [f"<sip:{extension}@127.0.0.1:{self.port}>"]:
            headers.append(("Contact", contact))
        if expires is not None:
            headers.append(("Expires", str(expires)))
        if authorization:
            headers.append(("Authorization", authorization))
        return build_message(f"REGISTER sip:{host}:{port} SIP/2.0", headers), branch

    async def request(self, data: bytes, branch: str, timeout: float = 3.0) -> SipMessage:
        """Send a request and wait for its final response (matched by branch)."""
        start = len(self.messages)
        self.send(data)
        return await self.wait_for(
            lambda m: m.is_response and m.branch == branch and m.status >= 200, timeout, since=start
        )

    async def register(
        self,
        extension: str,
        password: str,
        *,
        algorithm: str = "MD5",
        expires: int | None = 120,
        contacts: list[str] | None = None,
        nc: int = 1,
    ) -> SipMessage:
        """REGISTER, answer the 401 with ``algorithm``, return the final response to the second try."""
        data, branch = self.register_bytes(extension, contacts=contacts, expires=expires)
        first = await self.request(data, branch)
        if first.status != 401:
            return first
        challenge = self.challenge(first, algorithm)
        uri = f"sip:{self.registrar[0]}:{self.registrar[1]}"
        auth = digest_answer(
            challenge, method="REGISTER", uri=uri, username=extension, password=password, nc=nc
        )
        data, branch = self.register_bytes(extension, contacts=contacts, expires=expires, authorization=auth)
        return await self.request(data, branch)

    @staticmethod
    def challenge(response: SipMessage, algorithm: str) -> dict[str, str]:
        for value in response.all("www-authenticate"):
            params = digest_params(value)
            if params.get("algorithm", "MD5").upper() == algorithm.upper():
                return params
        raise AssertionError(f"no {algorithm} challenge in {response.all('www-authenticate')}")

    # --- receiving ---

    def _received(self, data: bytes, addr: Addr) -> None:
        try:
            message = parse_message(data)
        except ValueError:
            return
        self.messages.append((message, addr))
        if not message.is_response:
            self._answer(message, addr)
        asyncio.get_running_loop().create_task(self._wake())

    async def _wake(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(
        self, predicate: Callable[[SipMessage], bool], timeout: float, *, since: int = 0
    ) -> SipMessage:
        try:
            async with asyncio.timeout(timeout), self._changed:
                while True:
                    for message, _ in self.messages[since:]:
                        if predicate(message):
                            return message
                    await self._changed.wait()
        except TimeoutError:
            seen = [m.start_line for m, _ in self.messages[since:]]
            raise AssertionError(f"no matching message within {timeout}s; saw {seen}") from None

    def received(self, predicate: Callable[[SipMessage], bool]) -> list[SipMessage]:
        return [m for m, _ in self.messages if predicate(m)]

    def response_to(self, request: SipMessage, code: int, reason: str, body: bytes = b"") -> bytes:
        to_value = request.header("to") or ""
        if ";tag=" not in to_value:
            tag = self.to_tags.setdefault(request.call_id, os.urandom(4).hex())
            to_value += f";tag={tag}"
        headers = [("Via", via) for via in request.all("via")]
        headers += [
            ("From", request.header("from") or ""),
            ("To", to_value),
            ("Call-ID", request.call_id),
            ("CSeq", request.header("cseq") or ""),
        ]
        if 100 < code < 300 and request.method == "INVITE":
            headers.append(("Contact", f"<sip:agent@127.0.0.1:{self.port}>"))
        if body:
            headers.append(("Content-Type", "application/sdp"))
        return build_message(f"SIP/2.0 {code} {reason}", headers, body)

    def in_dialog_bytes(
        self,
        invite: SipMessage,
        method: str,
        cseq: int,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> tuple[bytes, str]:
        """A request from the agent inside the dialog ``invite`` created; returns (bytes, branch)."""
        branch = f"z9hG4bK{os.urandom(6).hex()}"
        target = re.search(r"<([^>]+)>", invite.header("contact") or "")
        assert target, invite.header("contact")
        tag = self.to_tags[invite.call_id]
        all_headers = [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", f"{invite.header('to')};tag={tag}"),
            ("To", invite.header("from") or ""),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{cseq} {method}"),
            ("Contact", f"<sip:agent@127.0.0.1:{self.port}>"),
            *(headers or []),
        ]
        return build_message(f"{method} {target.group(1)} SIP/2.0", all_headers, body), branch

    def _answer(self, request: SipMessage, addr: Addr) -> None:
        method = request.method
        if method == "OPTIONS":
            if self.answer_options:
                self.send(self.response_to(request, 200, "OK"), addr)
        elif method == "INVITE":
            if self.on_invite == "silent":
                return
            retransmission = sum(
                1 for m, _ in self.messages if m.method == "INVITE" and m.branch == request.branch
            )
            if retransmission > 1:
                return
            self.invites[request.call_id] = (request, addr)
            self.send(self.response_to(request, 180, "Ringing"), addr)
            if self.on_invite == "busy":
                self.send(self.response_to(request, 486, "Busy Here"), addr)
            elif self.on_invite == "answer":
                self.send(self.response_to(request, 200, "OK", ANSWER_SDP), addr)
        elif method == "CANCEL":
            self.send(self.response_to(request, 200, "OK"), addr)
            invite, invite_addr = self.invites.get(request.call_id, (None, addr))
            if invite is not None:
                if self.cross_cancel:  # the agent answered just as the CANCEL arrived
                    self.send(self.response_to(invite, 200, "OK", ANSWER_SDP), invite_addr)
                else:
                    self.send(self.response_to(invite, 487, "Request Terminated"), invite_addr)
        elif method in ("BYE", "NOTIFY", "INFO"):
            self.send(self.response_to(request, 200, "OK"), addr)


class _Protocol(asyncio.DatagramProtocol):
    """Hands datagrams to the agent (looked up late: the socket exists before the agent object)."""

    def __init__(self, holder: dict[str, RawAgent]) -> None:
        self.holder = holder

    def datagram_received(self, data: bytes, addr: Any) -> None:
        agent = self.holder.get("agent")
        if agent is not None:
            agent._received(data, (str(addr[0]), int(addr[1])))
