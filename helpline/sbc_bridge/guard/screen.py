"""Size and count caps on what a peer sends, and the scanner User-Agent list (A1, A9, A12).

Pure functions over bytes sizes and parsed requests, so the caps are testable without a socket and
the guard decides what each breach costs (a drop, a 513, a 488).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiosipua.message import SipRequest

from .settings import CapSettings


@dataclass(frozen=True, slots=True)
class Excess:
    """A cap a request broke: ``what`` (the :class:`CapSettings` field), the ``size`` found against
    its ``limit``, and the response it earns when it is answered at all."""

    what: str
    size: int
    limit: int
    code: int = 513
    phrase: str = "Message Too Large"

    @property
    def detail(self) -> str:
        return f"{self.what} {self.size} over the cap of {self.limit}"


def scanner_match(user_agent: str | None, needles: tuple[str, ...]) -> str | None:
    """The scanner signature found in ``user_agent`` (``needles`` lower-case), or None."""
    if not user_agent:
        return None
    lowered = user_agent.lower()
    for needle in needles:
        if needle in lowered:
            return needle
    return None


def request_excess(request: SipRequest, caps: CapSettings) -> Excess | None:
    """The first cap ``request`` breaks, or None.

    Header counts are values as parsed (aiosipua splits comma-joined Via and Contact values), so 500
    Vias on one line count as 500, not 1.
    """
    count = 0
    longest = 0
    for _, values in request.headers.items():
        count += len(values)
        for value in values:
            if len(value) > longest:
                longest = len(value)
    if count > caps.headers:
        return Excess("headers", count, caps.headers)
    if longest > caps.header_bytes:
        return Excess("header_bytes", longest, caps.header_bytes)
    vias = len(request.headers.get("via"))
    if vias > caps.via_headers:
        return Excess("via_headers", vias, caps.via_headers)
    body = request.body
    if body:
        media = body.count(b"\nm=") + body.startswith(b"m=")
        if media > caps.sdp_media_lines:
            return Excess("sdp_media_lines", media, caps.sdp_media_lines, 488, "Not Acceptable Here")
    return None
