"""A tiny, deliberately dumb SIP UAC over UDP for tests and the benchmark.

Hand-written on purpose: it is the *peer*, not the product, and being able to put any bytes on the
wire is what malformed-message tests need. It knows just enough RFC 3261 to place calls against a
well-behaved UAS: INVITE with retransmission (timer A), provisional and final responses, ACK for
2xx (new transaction) and non-2xx (same branch), CANCEL, BYE, INFO, re-INVITE, and answering the
UAS's own BYE. One socket carries any number of parallel dialogs (the benchmark places hundreds).

    async with await SipUac.open() as uac:
        call = await uac.invite("sip:+18005550100@127.0.0.1:5070", sdp=make_sdp_offer(probe.local_port))
        assert call.status == 200
        ...
        assert await call.bye() == 200
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.support.rtp_probe import SdpMedia, parse_sdp

logger = logging.getLogger(__name__)

T1 = 0.5
_COMPACT = {
    "v": "via",
    "f": "from",
    "t": "to",
    "i": "call-id",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "s": "subject",
}


@dataclass(slots=True)
class SipMessage:
    """A parsed SIP message; header names are lower-case, compact forms expanded."""

    start_line: str
    headers: list[tuple[str, str]]
    body: bytes
    raw: bytes = b""

    @property
    def is_response(self) -> bool:
        return self.start_line.startswith("SIP/2.0 ")

    @property
    def status(self) -> int:
        return int(self.start_line.split()[1]) if self.is_response else 0

    @property
    def reason(self) -> str:
        return self.start_line.split(" ", 2)[2] if self.is_response else ""

    @property
    def method(self) -> str:
        if self.is_response:
            return self.cseq[1]
        return self.start_line.split()[0]

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)

    def all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    @property
    def call_id(self) -> str:
        return self.header("call-id") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        num, _, method = (self.header("cseq") or "0 ?").partition(" ")
        return int(num), method.strip()

    @property
    def to_tag(self) -> str | None:
        m = re.search(r";\s*tag=([^;>\s]+)", self.header("to") or "")
        return m.group(1) if m else None

    @property
    def branch(self) -> str | None:
        m = re.search(r";\s*branch=([^;\s,]+)", self.header("via") or "")
        return m.group(1) if m else None

    @property
    def text_body(self) -> str:
        return self.body.decode("utf-8", "replace")


def parse_message(data: bytes) -> SipMessage:
    """Parse one SIP message from a datagram; ValueError when it is not SIP."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
    lines = head.decode("utf-8", "replace").replace("\r\n", "\n").split("\n")
    if not lines or not (lines[0].startswith("SIP/2.0 ") or lines[0].rstrip().endswith("SIP/2.0")):
        raise ValueError(f"not a SIP message: {lines[0][:60]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # folded continuation line
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if not colon:
            continue
        key = name.strip().lower()
        headers.append((_COMPACT.get(key, key), value.strip()))
    msg = SipMessage(lines[0].strip(), headers, body, data)
    length = msg.header("content-length")
    if length is not None and length.isdigit():
        msg.body = body[: int(length)]
    return msg


def build_message(start_line: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    lines = [start_line, *(f"{k}: {v}" for k, v in headers), f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode() + body


def _uri_host_port(uri: str) -> tuple[str, int]:
    m = re.match(r"<?sips?:(?:[^@>]*@)?([^:;>]+)(?::(\d+))?", uri.strip())
    if not m:
        raise ValueError(f"cannot read host:port from URI {uri!r}")
    return m.group(1), int(m.group(2) or 5060)


class _UacProtocol(asyncio.DatagramProtocol):
    owner: SipUac | None = None  # set right after the endpoint exists

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.owner is not None:
            self.owner._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        logger.debug("sip uac: socket error %s", exc)


@dataclass(slots=True)
class _ClientTsx:
    branch: str
    method: str
    request: bytes
    remote: tuple[str, int]
    responses: asyncio.Queue[SipMessage] = field(default_factory=asyncio.Queue)
    final: SipMessage | None = None
    provisional_seen: bool = False


class SipUac:
    """One UDP socket on 127.0.0.1, any number of client dialogs."""

    def __init__(self, transport: asyncio.DatagramTransport, host: str, port: int) -> None:
        self._transport = transport
        self.host = host
        self.local_port = port
        self._tsx: dict[str, _ClientTsx] = {}
        self._dialogs: dict[str, UacCall] = {}
        self.unmatched: asyncio.Queue[tuple[SipMessage, tuple[str, int]]] = asyncio.Queue()
        self.retransmissions = 0

    @classmethod
    async def open(cls, host: str = "127.0.0.1", port: int = 0) -> SipUac:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(_UacProtocol, local_addr=(host, port))
        uac = cls(transport, host, transport.get_extra_info("sockname")[1])
        protocol.owner = uac
        return uac

    def close(self) -> None:
        self._transport.close()

    async def __aenter__(self) -> SipUac:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    # -- wire ----------------------------------------------------------------------------------------

    def send_raw(self, data: bytes, remote: tuple[str, int]) -> None:
        """Put arbitrary bytes on the wire (malformed-message tests)."""
        self._transport.sendto(data, remote)

    async def next_unmatched(self, timeout: float) -> SipMessage:
        """The next message that belongs to no transaction or dialog of ours (e.g. reply to send_raw)."""
        async with asyncio.timeout(timeout):
            msg, _ = await self.unmatched.get()
            return msg

    def _on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if not data.strip():
            return  # keep-alive CRLF
        try:
            msg = parse_message(data)
        except ValueError as exc:
            logger.warning("sip uac: unparsable datagram from %s: %s", addr, exc)
            return
        if msg.is_response:
            tsx = self._tsx.get(f"{msg.branch}|{msg.method}")
            if tsx is not None:
                tsx.responses.put_nowait(msg)
                return
            call = self._dialogs.get(msg.call_id)
            if call is not None and msg.method == "INVITE" and 200 <= msg.status < 300:
                call._resend_ack(msg)  # 200 retransmitted after our ACK got lost or was slow
                return
        else:
            call = self._dialogs.get(msg.call_id)
            if call is not None:
                call._on_request(msg, addr)
                return
        self.unmatched.put_nowait((msg, addr))

    async def _transaction(
        self,
        method: str,
        branch: str,
        request: bytes,
        remote: tuple[str, int],
        timeout: float,
        on_provisional: Callable[[SipMessage], None] | None = None,
    ) -> _ClientTsx:
        """Send a request with RFC 3261 retransmission; returns once a final response (or timeout)."""
        tsx = _ClientTsx(branch, method, request, remote)
        key = f"{branch}|{method}"
        self._tsx[key] = tsx
        self._transport.sendto(request, remote)
        interval = T1
        next_retx = time.monotonic() + interval
        deadline = time.monotonic() + timeout
        try:
            while True:
                now = time.monotonic()
                if now >= deadline:
                    return tsx
                wait = min(deadline, next_retx) - now
                try:
                    msg = await asyncio.wait_for(tsx.responses.get(), wait)
                except TimeoutError:
                    if time.monotonic() >= next_retx and not (method == "INVITE" and tsx.provisional_seen):
                        self._transport.sendto(request, remote)
                        self.retransmissions += 1
                        interval = min(interval * 2, 4.0)  # timer A/E doubling, capped at T2
                    next_retx = time.monotonic() + interval
                    continue
                if msg.status < 200:
                    tsx.provisional_seen = True
                    if on_provisional is not None:
                        on_provisional(msg)
                    continue
                tsx.final = msg
                return tsx
        finally:
            self._tsx.pop(key, None)

    # -- calls ---------------------------------------------------------------------------------------

    async def invite(
        self,
        target: str,
        sdp: str | None = None,
        *,
        caller: str = "+15551230001",
        caller_name: str | None = None,
        remote: tuple[str, int] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        wait_final: bool = True,
        refer_status: int | None = None,
    ) -> UacCall:
        """Send an INVITE to ``target`` (a sip: URI); waits for the final response unless told not to.

        With ``wait_final=False`` it returns at the first provisional response (for CANCEL tests);
        then ``await call.wait_final(timeout)``.
        """
        call = UacCall(self, target, remote or _uri_host_port(target), caller, caller_name, sdp, headers)
        call.accept_refer(refer_status)  # set before the INVITE: a REFER may follow the 200 at once
        self._dialogs[call.call_id] = call
        await call._invite(timeout, wait_final)
        return call


class UacCall:
    """One INVITE dialog placed by :class:`SipUac`."""

    def __init__(
        self,
        uac: SipUac,
        target: str,
        remote: tuple[str, int],
        caller: str,
        caller_name: str | None,
        sdp: str | None,
        headers: Mapping[str, str] | None,
    ) -> None:
        self._uac = uac
        self.target = target
        self.remote = remote
        self.call_id = f"{uuid.uuid4().hex}@probe"
        self.from_tag = uuid.uuid4().hex[:10]
        self.to_tag: str | None = None
        self._cseq = itertools.count(random.randint(1, 1000))
        self.invite_cseq = 0
        self.offer = sdp
        self.extra_headers = dict(headers or {})
        display = f'"{caller_name}" ' if caller_name else ""
        self.from_header = f"{display}<sip:{caller}@{uac.host}:{uac.local_port}>;tag={self.from_tag}"
        self.to_header = f"<{target}>"
        self.request_uri = target
        self.responses: list[SipMessage] = []
        self.final: SipMessage | None = None
        self.answer_sdp: str | None = None
        self.media: SdpMedia | None = None
        self.state = "calling"  # calling | early | confirmed | terminated | failed
        self.ended_by: str | None = None  # "local" | "remote"
        self.requests_received: list[SipMessage] = []
        self.invite_sent_at = 0.0
        self.answered_at: float | None = None
        self._remote_bye = asyncio.Event()
        self._refer_seen = asyncio.Event()
        self._refer_status: int | None = None
        self.refer_to: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._early = asyncio.Event()
        self._invite_task: asyncio.Task[_ClientTsx] | None = None
        self._invite_branch = ""
        self._ack: bytes | None = None

    @property
    def status(self) -> int:
        """Final status of the INVITE (0 while none arrived)."""
        return self.final.status if self.final else 0

    def _headers(self, method: str, cseq: int, branch: str) -> list[tuple[str, str]]:
        to = self.to_header + (f";tag={self.to_tag}" if self.to_tag else "")
        return [
            ("Via", f"SIP/2.0/UDP {self._uac.host}:{self._uac.local_port};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", self.from_header),
            ("To", to),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
            ("Contact", f"<sip:probe@{self._uac.host}:{self._uac.local_port}>"),
            ("User-Agent", "helpline-test-uac"),
        ]

    def _request(
        self,
        method: str,
        cseq: int,
        branch: str,
        body: str | None = None,
        content_type: str = "application/sdp",
        extra: Mapping[str, str] | None = None,
    ) -> bytes:
        headers = self._headers(method, cseq, branch)
        headers += list((extra or {}).items())
        if body is not None:
            headers.append(("Content-Type", content_type))
        return build_message(f"{method} {self.request_uri} SIP/2.0", headers, (body or "").encode())

    @staticmethod
    def _branch() -> str:
        return f"z9hG4bK{uuid.uuid4().hex[:16]}"

    async def _invite(self, timeout: float, wait_final: bool) -> None:
        self.invite_cseq = next(self._cseq)
        self._invite_branch = self._branch()
        request = self._request(
            "INVITE", self.invite_cseq, self._invite_branch, self.offer, extra=self.extra_headers
        )
        self.invite_sent_at = time.monotonic()
        self._invite_task = asyncio.get_running_loop().create_task(
            self._uac._transaction(
                "INVITE", self._invite_branch, request, self.remote, timeout, self._on_provisional
            )
        )
        if wait_final:
            await self.wait_final(timeout)
        else:
            await self._wait_provisional(timeout)

    async def _wait_provisional(self, timeout: float) -> None:
        assert self._invite_task is not None
        early = asyncio.get_running_loop().create_task(self._early.wait())
        pending: set[asyncio.Future[Any]] = {early, self._invite_task}
        try:
            await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            early.cancel()

    def _on_provisional(self, msg: SipMessage) -> None:
        self.responses.append(msg)
        if self.state == "calling":
            self.state = "early"
        self._early.set()

    async def wait_final(self, timeout: float) -> int:
        """Wait for the INVITE's final response, ACK it, and return its status (0 on timeout)."""
        if self.final is not None:
            return self.final.status
        assert self._invite_task is not None
        try:
            tsx = await asyncio.wait_for(asyncio.shield(self._invite_task), timeout)
        except TimeoutError:
            return 0
        final = tsx.final
        if final is None:
            self.state = "failed"
            return 0
        self.final = final
        self.responses.append(final)
        self.to_tag = final.to_tag
        if 200 <= final.status < 300:
            self.answered_at = time.monotonic()
            self.state = "confirmed"
            if final.body:
                self.answer_sdp = final.text_body
                try:
                    self.media = parse_sdp(self.answer_sdp)
                except ValueError as exc:
                    logger.warning("sip uac: unreadable SDP answer on %s: %s", self.call_id, exc)
            contact = final.header("contact")
            if contact:
                m = re.search(r"<([^>]+)>", contact)
                self.request_uri = m.group(1) if m else contact.split(";")[0].strip()
            self._send_ack_2xx()
        else:
            self.state = "failed"
            self._send_ack_non2xx(final)
        return final.status

    def _send_ack_2xx(self) -> None:
        self._ack = self._request("ACK", self.invite_cseq, self._branch())
        self._uac._transport.sendto(self._ack, self.remote)

    def _resend_ack(self, msg: SipMessage) -> None:
        if self._ack is not None:
            self._uac._transport.sendto(self._ack, self.remote)

    def _send_ack_non2xx(self, final: SipMessage) -> None:
        headers = self._headers("ACK", self.invite_cseq, self._invite_branch)
        headers = [(k, final.header("to") or v) if k == "To" else (k, v) for k, v in headers]
        ack = build_message(f"ACK {self.target} SIP/2.0", [h for h in headers if h[0] != "Contact"])
        self._uac._transport.sendto(ack, self.remote)

    async def _in_dialog(
        self,
        method: str,
        body: str | None = None,
        content_type: str = "application/sdp",
        timeout: float = 8.0,
        extra: Mapping[str, str] | None = None,
    ) -> SipMessage | None:
        branch = self._branch()
        request = self._request(method, next(self._cseq), branch, body, content_type, extra)
        tsx = await self._uac._transaction(method, branch, request, self.remote, timeout)
        return tsx.final

    async def cancel(self, timeout: float = 8.0) -> tuple[int, int]:
        """CANCEL a ringing INVITE; returns (status of CANCEL, final status of INVITE, e.g. 487)."""
        headers = self._headers("CANCEL", self.invite_cseq, self._invite_branch)
        request = build_message(
            f"CANCEL {self.target} SIP/2.0", [h for h in headers if h[0] not in ("Contact",)]
        )
        tsx = await self._uac._transaction("CANCEL", self._invite_branch, request, self.remote, timeout)
        invite_status = await self.wait_final(timeout)
        self.ended_by = "local"
        return (tsx.final.status if tsx.final else 0), invite_status

    async def bye(self, timeout: float = 8.0) -> int:
        """Hang up; returns the BYE's final status (0 on timeout)."""
        final = await self._in_dialog("BYE", timeout=timeout)
        self.state = "terminated"
        self.ended_by = self.ended_by or "local"
        return final.status if final else 0

    async def info_dtmf(self, digit: str, duration_ms: int = 160, timeout: float = 8.0) -> int:
        """Send one digit as SIP INFO application/dtmf-relay."""
        body = f"Signal={digit}\r\nDuration={duration_ms}\r\n"
        final = await self._in_dialog("INFO", body, "application/dtmf-relay", timeout)
        return final.status if final else 0

    async def reinvite(self, sdp: str, timeout: float = 8.0) -> int:
        """Send a re-INVITE with ``sdp`` (e.g. a=sendonly for hold); ACKs a 2xx; returns the status."""
        cseq = next(self._cseq)
        branch = self._branch()
        request = self._request("INVITE", cseq, branch, sdp)
        tsx = await self._uac._transaction("INVITE", branch, request, self.remote, timeout)
        if tsx.final is None:
            return 0
        if 200 <= tsx.final.status < 300:
            self._uac._transport.sendto(self._request("ACK", cseq, self._branch()), self.remote)
            if tsx.final.body:
                self.answer_sdp = tsx.final.text_body
                self.media = parse_sdp(self.answer_sdp)
        return tsx.final.status

    async def wait_remote_bye(self, timeout: float) -> bool:
        """True once the far end sent BYE (answered 200 by us)."""
        try:
            await asyncio.wait_for(self._remote_bye.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def accept_refer(self, sipfrag_status: int | None) -> None:
        """How to answer a REFER (blind transfer): 202, then a NOTIFY whose sipfrag carries
        ``sipfrag_status`` (200 = the transfer target answered, 486 = busy...); None = 603 Declined."""
        self._refer_status = sipfrag_status

    async def wait_refer(self, timeout: float) -> str | None:
        """The Refer-To of the first REFER received, or None after ``timeout``."""
        try:
            await asyncio.wait_for(self._refer_seen.wait(), timeout)
        except TimeoutError:
            return None
        return self.refer_to

    async def _notify_refer(self, status: int) -> None:
        reason = {200: "OK", 486: "Busy Here", 480: "Temporarily Unavailable"}.get(status, "Error")
        await self._in_dialog(
            "NOTIFY", f"SIP/2.0 {status} {reason}\r\n", "message/sipfrag;version=2.0",
            extra={"Event": "refer", "Subscription-State": "terminated;reason=noresource"},
        )

    def _on_request(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        self.requests_received.append(msg)
        if msg.method == "ACK":
            return
        body = b""
        extra: list[tuple[str, str]] = []
        status_line = "SIP/2.0 200 OK"
        if msg.method == "REFER":
            self.refer_to = msg.header("refer-to")
            self._refer_seen.set()
            status = self._refer_status
            if status is None:
                status_line = "SIP/2.0 603 Declined"
            else:
                status_line = "SIP/2.0 202 Accepted"
                task = asyncio.get_running_loop().create_task(self._notify_refer(status))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        elif msg.method == "BYE":
            self.state = "terminated"
            self.ended_by = self.ended_by or "remote"
            self._remote_bye.set()
        elif msg.method == "INVITE" and self.offer is not None:
            body = self.offer.encode()
            extra.append(("Content-Type", "application/sdp"))
        headers = [
            (k.title() if k != "call-id" else "Call-ID", v)
            for k, v in msg.headers
            if k in ("via", "from", "to", "call-id", "cseq")
        ]
        headers = [("CSeq", v) if k == "Cseq" else (k, v) for k, v in headers]
        self._uac._transport.sendto(build_message(status_line, headers + extra, body), addr)
