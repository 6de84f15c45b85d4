"""Checks a request must pass before the edge acts on it (RFC 3261 §8.2, §18.3, §25; RFC 4475).

aiosipua's parser is lenient by design; a malformed header would otherwise surface as an exception
deep in dialog code, or worse, be acted on. Each problem names the offending header so the answer,
its Warning and the security event all say what was wrong, and carries the status code RFC 3261
prescribes for it (400 for syntax, 416 for an unknown URI scheme, 420 for an unknown extension,
415/406 for bodies we cannot take or answer, 505 for another SIP version).

Two entry points: :func:`validate_request` works on a parsed request; :func:`start_line_problem`
works on the raw bytes, for what the parser throws away (extra spaces in the request line, the
SIP version, a status code that is not three digits). A transport that dispatches a message inside
``with receiving(data):`` lets :func:`validate_request` apply the raw check too, so both edges get
it at their one validation point without the bytes travelling through every signature.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from aiosipua.message import SipRequest, SipResponse

_TOKEN = r"[A-Za-z0-9.!%*_+`'~\-]+"
_CSEQ = re.compile(rf"^\s*([0-9]{{1,10}})\s+({_TOKEN})\s*$")
_REQUIRED = ("Via", "From", "To", "Call-ID", "CSeq")
_SINGLE = ("Content-Length", "Call-ID", "From", "To", "CSeq", "Max-Forwards", "Content-Type")
_DIGITS = re.compile(r"^\s*(?=[0-9])0*([0-9]{0,10})\s*$", re.ASCII)
_MAX_CSEQ = 2**32 - 1  # RFC 3261 §8.1.1.5: a 32-bit unsigned integer
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):(\S+)$")
_VIA = re.compile(
    rf"^SIP\s*/\s*(?P<version>[^/\s]+)\s*/\s*(?P<transport>{_TOKEN})\s+"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s;:\[\]]+)(?:\s*:\s*(?P<port>[0-9]{1,5}))?(?P<params>.*)$",
    re.DOTALL,
)
_PARAM = re.compile(rf'^\s*{_TOKEN}\s*(?:=\s*(?:"(?:[^"\\]|\\.)*"|[^\s";]+)\s*)?$', re.DOTALL)
# Unquoted display names: tokens, plus any non-ASCII letter (phones send "Jürgen <sip:...>" unquoted;
# refusing them buys no safety, while RFC 4475 baddn's unquoted comma stays refused).
_DISPLAY_WORD = r"[A-Za-z0-9.!%*_+`'~\-\u0080-\U0010ffff]+"
_DISPLAY_TOKENS = re.compile(rf"^{_DISPLAY_WORD}(?:\s+{_DISPLAY_WORD})*$")
_REQUEST_LINE = re.compile(rb"^([^ \r\n]+) ([^ \r\n]+) SIP/([0-9]+\.[0-9]+)\r?$")
_STATUS_LINE = re.compile(rb"^SIP/([0-9]+\.[0-9]+) ([1-6][0-9]{2}) [^\r\n]*\r?$")
_SDP = "application/sdp"
_EXEMPT_FROM_REQUIRE = {"ACK", "CANCEL"}

REASON_PHRASES: dict[int, str] = {
    400: "Bad Request",
    406: "Not Acceptable",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    483: "Too Many Hops",
    505: "Version Not Supported",
    513: "Message Too Large",
}
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset({"timer"})
_RECEIVED: ContextVar[bytes | None] = ContextVar("sip_received_bytes", default=None)


@dataclass(frozen=True, slots=True)
class Problem:
    """What is wrong with a request: the header at fault, a short reason and the answer to give.

    ``headers`` are the ones the answer must carry (Unsupported for 420, Accept for 415).
    """

    header: str
    reason: str
    code: int = 400
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def reason_phrase(self) -> str:
        """The RFC 3261 reason phrase for :attr:`code`."""
        return REASON_PHRASES.get(self.code, "Bad Request")

    @property
    def warning(self) -> str:
        """A Warning header value naming the problem (RFC 3261 §20.43, code 399)."""
        return '399 - "{}"'.format(self.reason.replace('"', "'").replace("\\", "/"))


def validate_request(
    request: SipRequest,
    *,
    stream: bool,
    supported: Collection[str] = SUPPORTED_EXTENSIONS,
) -> Problem | None:
    """The first problem found in ``request``, or None when it is well-formed enough to process.

    ``stream`` is True for TCP, where framing already matched Content-Length to the body.
    ``supported`` lists the option tags a Require may name (anything else gets 420). Inside
    :func:`receiving`, the raw start line is checked first (:func:`start_line_problem`).
    """
    received = _RECEIVED.get()
    if received is not None:
        problem = start_line_problem(received)
        if problem is not None:
            return problem
    for name in _REQUIRED:
        values = request.headers.get(name)
        if not values or not values[0].strip():
            return Problem(name, f"missing {name} header")
    for name in _SINGLE:
        if len(request.headers.get(name)) > 1:
            return Problem(name, f"more than one {name} header")
    return (
        _request_uri_problem(request.uri)
        or _via_problem(request.headers.get("via"))
        or _cseq_problem(request)
        or _address_problems(request)
        or _scalar_problems(request, stream)
        or _require_problem(request, supported)
        or _body_problem(request)
    )


def start_line_problem(data: bytes) -> Problem | None:
    """What the parser cannot see: the request line's exact shape and its SIP version.

    RFC 3261 §7.1 allows exactly one SP between the three elements and nothing after the version
    (RFC 4475 lwsstart, trws, lwsruri, ltgtruri); another version gets 505 (badvers). For a
    response, a status code that is not three digits from 100 to 699 (bigcode) makes the message
    unusable: the caller should discard it.
    """
    line = data.split(b"\n", 1)[0]
    if line.startswith(b"SIP/"):
        if _STATUS_LINE.match(line) is None:
            return Problem("Status-Line", "malformed Status-Line")
        return None
    match = _REQUEST_LINE.match(line)
    if match is None:
        return Problem("Request-Line", "malformed Request-Line")
    if match.group(3) != b"2.0":
        version = match.group(3).decode("ascii")
        return Problem("SIP-Version", f"SIP version {version} is not supported", 505)
    if b"<" in match.group(2) or b">" in match.group(2):
        return Problem("Request-URI", "Request-URI must not be enclosed in <>")
    return None


def response_problem(data: bytes, response: SipResponse) -> Problem | None:
    """Why a response must be discarded before any transaction sees it (RFC 4475 A27: a scanner's
    malformed answers to our requests): a bad status line, no Via/Call-ID, or a CSeq that is not
    ``<32-bit number> <method>`` (aiosipua would raise on it deep inside dialog code)."""
    problem = start_line_problem(data)
    if problem is not None:
        return problem
    for name in ("Via", "Call-ID", "CSeq"):
        values = response.headers.get(name)
        if not values or not values[0].strip():
            return Problem(name, f"missing {name} header")
    cseq = _CSEQ.match(response.headers.get("cseq")[0])
    if cseq is None or not cseq.group(1).isascii() or int(cseq.group(1)) > _MAX_CSEQ:
        return Problem("CSeq", "bad CSeq header")
    return None


@contextmanager
def receiving(data: bytes) -> Iterator[None]:
    """Declare ``data`` as the bytes of the message being dispatched (see :func:`validate_request`)."""
    token = _RECEIVED.set(data)
    try:
        yield
    finally:
        _RECEIVED.reset(token)


def received_size(request: SipRequest) -> int:
    """How many bytes ``request`` arrived as (inside :func:`receiving`; else its serialised size)."""
    received = _RECEIVED.get()
    return len(received) if received is not None else len(bytes(request))


def max_forwards_exhausted(request: SipRequest) -> bool:
    """Whether the request arrived with Max-Forwards 0 (RFC 3261 §16.3: answer 483)."""
    value = request.headers.get_first("max-forwards")
    return value is not None and _small_int(value) == 0


# --- the parts ---


def _request_uri_problem(uri: str) -> Problem | None:
    if "<" in uri or ">" in uri:
        return Problem("Request-URI", "Request-URI must not be enclosed in <>")
    match = _SCHEME.match(uri)
    if match is None:
        return Problem("Request-URI", f"malformed Request-URI {uri[:64]!r}")
    scheme = match.group(1).lower()
    if scheme == "tel":
        return None
    if scheme not in ("sip", "sips"):
        return Problem("Request-URI", f"unsupported URI scheme {scheme[:32]!r}", 416)
    hostpart = match.group(2).partition("@")[2] or match.group(2)
    if "?" in hostpart:
        return Problem("Request-URI", "headers are not allowed in a Request-URI")
    return _params_problem(hostpart, "Request-URI")


def _params_problem(text: str, header: str) -> Problem | None:
    """Each ``;param`` after the first element of ``text`` must be a token with an optional value."""
    parts = _split_outside_quotes(text, ";")
    for part in parts[1:]:
        if not _PARAM.match(part):
            what = "an empty parameter" if not part.strip() else f"a malformed parameter {part[:32]!r}"
            return Problem(header, f"{header} has {what}")
    return None


def _via_problem(values: list[str]) -> Problem | None:
    for value in values:
        match = _VIA.match(value.strip())
        if match is None:
            return Problem("Via", "unparseable Via header")
        if match.group("version") != "2.0":
            return Problem("Via", f"SIP version {match.group('version')[:8]} is not supported", 505)
        params = match.group("params")
        if _split_outside_quotes(params, ";")[0].strip():
            return Problem("Via", "unexpected text after the Via sent-by")
        problem = _params_problem(params, "Via")
        if problem is not None:
            return problem
    return None


def _cseq_problem(request: SipRequest) -> Problem | None:
    cseq = _CSEQ.match(request.headers.get("cseq")[0])
    if cseq is None or int(cseq.group(1)) > _MAX_CSEQ:
        return Problem("CSeq", "bad CSeq header")
    if cseq.group(2) != request.method:  # method names are case-sensitive (RFC 3261 §7.1)
        return Problem("CSeq", f"CSeq method {cseq.group(2)} does not match {request.method}")
    return None


def _address_problems(request: SipRequest) -> Problem | None:
    for name in ("From", "To"):
        problem = _address_problem(request.headers.get(name)[0], name, identity=True)
        if problem is not None:
            return problem
    for value in request.headers.get("contact"):
        if value.strip() != "*":
            problem = _address_problem(value, "Contact", identity=False)
            if problem is not None:
                return problem
    return None


def _address_problem(value: str, header: str, *, identity: bool) -> Problem | None:
    """name-addr / addr-spec syntax (RFC 3261 §20.10, §25.1) and, for From/To, a usable scheme."""
    text = value.strip()
    if text.startswith('"'):
        end = _closing_quote(text)
        if end < 0:
            return Problem(header, f"unterminated quoted display name in {header}")
        rest = text[end + 1 :].lstrip()
        if not rest.startswith("<"):
            return Problem(header, f"{header} display name must be followed by <URI>")
        text = rest
    lt = text.find("<")
    if lt >= 0:
        display = text[:lt].strip()
        if display and not _DISPLAY_TOKENS.match(display):
            return Problem(header, f"{header} display name with special characters must be quoted")
        gt = text.find(">", lt)
        if gt < 0:
            return Problem(header, f"unclosed <> in {header}")
        uri, params = text[lt + 1 : gt], text[gt + 1 :]
        if uri != uri.strip() or not uri:
            return Problem(header, f"whitespace inside <> in {header}")
        if params.strip() and not params.lstrip().startswith(";"):
            return Problem(header, f"unexpected text after > in {header}")
    else:
        uri, _, params = text.partition(";")
        uri = uri.strip()
        params = ";" + params if _ else ""
        if "?" in uri or "," in uri:
            return Problem(header, f"a URI with ? or , in {header} must be enclosed in <>")
    if _SCHEME.match(uri) is None:
        return Problem(header, f"unparseable {header} header")
    if identity:
        scheme, _, rest = uri.partition(":")
        scheme = scheme.lower()
        if scheme in ("sip", "sips"):
            host = rest.partition("@")[2] if "@" in rest else rest
            if not host.split(";", 1)[0].split("?", 1)[0]:
                return Problem(header, f"unparseable {header} header")
        elif scheme != "tel":
            return Problem(header, f"{header} must be a sip, sips or tel URI, not {scheme[:16]!r}")
    return _params_problem("x" + params, header)


def _closing_quote(text: str) -> int:
    """Index of the quote closing the quoted-string that starts ``text`` (-1 when none)."""
    i = 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i
        i += 1
    return -1


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts, current, quoted, i = [], [], False, 0
    while i < len(text):
        ch = text[i]
        if quoted and ch == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def _scalar_problems(request: SipRequest, stream: bool) -> Problem | None:
    max_forwards = request.headers.get_first("max-forwards")
    if max_forwards is not None:
        hops = _small_int(max_forwards)
        if hops is None or hops > 255:
            return Problem("Max-Forwards", "bad Max-Forwards header")
    content_length = request.headers.get_first("content-length")
    if content_length is not None:
        length = _small_int(content_length)
        if length is None:
            return Problem("Content-Length", "bad Content-Length header")
        if not stream and length > len(request.body):
            return Problem("Content-Length", "Content-Length larger than the body received")
    return None


def _small_int(text: str) -> int | None:
    """An ASCII decimal of at most 10 significant digits (leading zeros allowed), else None.

    ``str.isdigit`` accepts '²' and int() refuses 5000-digit strings: neither may reach int().
    """
    match = _DIGITS.match(text)
    return int(match.group(1) or "0") if match else None


def _require_problem(request: SipRequest, supported: Collection[str]) -> Problem | None:
    """RFC 3261 §8.2.2.3: 420 listing every Require option tag we do not support."""
    if request.method.upper() in _EXEMPT_FROM_REQUIRE:
        return None
    known = {tag.lower() for tag in supported}
    unknown = [
        t.strip() for t in request.headers.get("require") if t.strip() and t.strip().lower() not in known
    ]
    if not unknown:
        return None
    listed = ", ".join(unknown)
    return Problem("Require", f"unsupported extension {listed[:64]}", 420, (("Unsupported", listed),))


def _body_problem(request: SipRequest) -> Problem | None:
    """An INVITE's body must be SDP (415, RFC 3261 §21.4.13) and SDP must be acceptable (406)."""
    if request.method.upper() != "INVITE":
        return None
    kind = (request.content_type or "").split(";", 1)[0].strip().lower()
    if request.body and kind != _SDP:
        return Problem("Content-Type", f"unsupported body type {kind[:48]!r}", 415, (("Accept", _SDP),))
    accepted = [v.split(";", 1)[0].strip().lower() for v in request.headers.get("accept") if v.strip()]
    if accepted and not any(v in (_SDP, "application/*", "*/*") for v in accepted):
        return Problem("Accept", "Accept does not allow application/sdp", 406, (("Accept", _SDP),))
    return None


__all__ = [
    "REASON_PHRASES",
    "SUPPORTED_EXTENSIONS",
    "Problem",
    "max_forwards_exhausted",
    "receiving",
    "start_line_problem",
    "validate_request",
]
