"""Checks a parsed request must pass before the edge acts on it (RFC 3261 §8.2, §18.3).

aiosipua's parser is lenient by design; a malformed header would otherwise surface as an exception
deep in dialog code. Each problem names the offending header so the 400, its Warning and the
security event all say what was wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiosipua.headers import parse_address, parse_via
from aiosipua.message import SipRequest

_CSEQ = re.compile(r"^\s*([0-9]{1,10})\s+([A-Za-z!%'*+\-.`~_]+)\s*$")
_REQUIRED = ("Via", "From", "To", "Call-ID", "CSeq")
_MAX_CSEQ = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Problem:
    """What is wrong with a request: the header at fault and a short reason."""

    header: str
    reason: str


def validate_request(request: SipRequest, *, stream: bool) -> Problem | None:
    """The first problem found in ``request``, or None when it is well-formed enough to process.

    ``stream`` is True for TCP, where framing already matched Content-Length to the body.
    """
    for name in _REQUIRED:
        values = request.headers.get(name)
        if not values or not values[0].strip():
            return Problem(name, f"missing {name} header")
    if not re.match(r"^(sips?|tel):", request.uri, re.IGNORECASE):
        return Problem("Request-URI", f"unsupported Request-URI {request.uri[:64]!r}")
    via = parse_via(request.headers.get("via")[0])
    if not via.host or not via.protocol.upper().startswith("SIP/"):
        return Problem("Via", "unparseable Via header")
    cseq = _CSEQ.match(request.headers.get("cseq")[0])
    if cseq is None or int(cseq.group(1)) > _MAX_CSEQ:
        return Problem("CSeq", "bad CSeq header")
    if cseq.group(2).upper() != request.method.upper():
        return Problem("CSeq", f"CSeq method {cseq.group(2)} does not match {request.method}")
    for name in ("From", "To"):
        address = parse_address(request.headers.get(name)[0])
        if not address.uri.host:
            return Problem(name, f"unparseable {name} header")
    max_forwards = request.headers.get_first("max-forwards")
    if max_forwards is not None and not (max_forwards.strip().isdigit() and int(max_forwards) <= 255):
        return Problem("Max-Forwards", "bad Max-Forwards header")
    content_length = request.headers.get_first("content-length")
    if content_length is not None:
        if not content_length.strip().isdigit():
            return Problem("Content-Length", "bad Content-Length header")
        if not stream and int(content_length) > len(request.body):
            return Problem("Content-Length", "Content-Length larger than the body received")
    return None


def max_forwards_exhausted(request: SipRequest) -> bool:
    """Whether the request arrived with Max-Forwards 0 (RFC 3261 §16.3: answer 483)."""
    value = request.headers.get_first("max-forwards")
    return value is not None and value.strip() == "0"
