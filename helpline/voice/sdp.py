"""SDP offer/answer (RFC 4566 text, RFC 3264 rules) for one G.711 audio stream.

SDP arrives from the SIP layer as bytes written by any carrier, SBC or softphone, so parsing is
strict about structure (every error names the line) and lenient about what we don't use (unknown
lines and attributes are ignored). The answer is built here too, so the SIP layer never touches SDP
text: it passes the offer's bytes in and the answer's bytes out.
"""

from __future__ import annotations

import ipaddress
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from helpline.voice.g711 import CODECS, FRAME_MS, SAMPLE_RATE

Direction = Literal["sendrecv", "sendonly", "recvonly", "inactive"]
DIRECTIONS: tuple[Direction, ...] = ("sendrecv", "sendonly", "recvonly", "inactive")
MAX_SDP_BYTES = 65536
SUPPORTED_PROTO = "RTP/AVP"
STATIC_PAYLOAD_TYPES = {0: "PCMU", 8: "PCMA"}
TELEPHONE_EVENT = "telephone-event"


class SdpError(ValueError):
    """The SDP text is malformed; the message names the offending line (1-based) and its text."""

    def __init__(self, reason: str, line_no: int | None = None, line: str | None = None) -> None:
        self.reason = reason
        self.line_no = line_no
        self.line = line
        where = f"SDP line {line_no}: {line!r}: " if line_no is not None else "SDP: "
        super().__init__(where + reason)


class NoCommonCodec(Exception):
    """The offer is well-formed but holds no audio stream we can take (SIP answers 488)."""


@dataclass(frozen=True, slots=True)
class RtpMap:
    """One ``a=rtpmap``: encoding name, clock rate and channel count of a payload type."""

    encoding: str
    clock_rate: int
    channels: int = 1


@dataclass(slots=True)
class MediaDescription:
    """One ``m=`` section with the attributes we act on."""

    media: str
    port: int
    proto: str
    formats: list[str]
    line_no: int
    address: str | None = None
    address_type: str | None = None
    rtpmaps: dict[int, RtpMap] = field(default_factory=dict)
    fmtps: dict[int, str] = field(default_factory=dict)
    direction: Direction | None = None
    ptime: int | None = None

    def rtpmap(self, pt: int) -> RtpMap | None:
        """The mapping of ``pt``: from ``a=rtpmap`` or, for static types, RFC 3551's table."""
        if pt in self.rtpmaps:
            return self.rtpmaps[pt]
        if pt in STATIC_PAYLOAD_TYPES:
            return RtpMap(STATIC_PAYLOAD_TYPES[pt], SAMPLE_RATE)
        return None


@dataclass(slots=True)
class SessionDescription:
    """A parsed SDP body: session-level connection/direction and the media sections."""

    origin: str
    timing: str = "0 0"
    address: str | None = None
    address_type: str | None = None
    direction: Direction | None = None
    media: list[MediaDescription] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Negotiated:
    """The outcome of one offer/answer: where to send, what codec, which way, and the answer text.

    ``direction`` is *our* direction as written in the answer. ``on_hold`` says the peer put the call
    on hold (it offered sendonly/inactive, or the RFC 2543 ``c=0.0.0.0``); then nothing is expected
    from it, so media-timeout supervision pauses.

    ``answer_sdp`` holds the SDP *we* sent in this exchange: our answer when we answered an offer
    (``SdpSession.answer``), or our offer when the peer answered it (``SdpSession.accept_answer``;
    ``b""`` if that ``SdpSession`` never made an offer). Either way it is the body the SIP layer sent.
    """

    remote: tuple[str, int]
    codec: str
    payload_type: int
    telephone_event_pt: int | None
    direction: Direction
    on_hold: bool
    ptime: int
    remote_ptime: int | None
    answer_sdp: bytes

    @property
    def sends(self) -> bool:
        """Whether we send media to the peer."""
        return self.direction in ("sendrecv", "sendonly")

    @property
    def receives(self) -> bool:
        """Whether we expect media from the peer (drives the media timeout)."""
        return self.direction in ("sendrecv", "recvonly") and not self.on_hold


def _parse_connection(value: str, line_no: int, line: str) -> tuple[str, str]:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError("expected 'c=IN IP4|IP6 <address>'", line_no, line)
    address = parts[2].split("/", 1)[0]
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        raise SdpError(f"connection address {address!r} is not an IP address", line_no, line) from None
    if (parsed.version == 4) != (parts[1] == "IP4"):
        raise SdpError(f"address {address!r} does not match {parts[1]}", line_no, line)
    return str(parsed), parts[1]


def _decimal(text: str, max_digits: int) -> int | None:
    """``text`` as a number when it is 1 to ``max_digits`` ASCII digits, else None.

    ``str.isdigit`` alone lets through superscripts and other Unicode digits that ``int`` refuses
    (``"²"``), and ``int`` refuses more than 4300 digits: either would escape as a bare ``ValueError``.
    """
    if 0 < len(text) <= max_digits and text.isascii() and text.isdigit():
        return int(text)
    return None


def _format_pt(fmt: str) -> int | None:
    """The payload type an m-line format names, or None for a non-RTP format token."""
    return _decimal(fmt, 3)


def _parse_media(value: str, line_no: int, line: str) -> MediaDescription:
    parts = value.split()
    if len(parts) < 4:
        raise SdpError("expected 'm=<media> <port> <proto> <fmt> ...'", line_no, line)
    port = _decimal(parts[1].split("/", 1)[0], 5)
    if port is None or port > 65535:
        raise SdpError(f"bad port {parts[1]!r}", line_no, line)
    return MediaDescription(parts[0], port, parts[2], parts[3:], line_no)


def _payload_type(text: str, line_no: int, line: str) -> int:
    pt = _decimal(text, 3)
    if pt is None or pt > 127:
        raise SdpError(f"bad payload type {text!r}", line_no, line)
    return pt


def _parse_attribute(value: str, target: MediaDescription | SessionDescription, line_no: int,
                     line: str) -> None:
    name, _, rest = value.partition(":")
    if name in DIRECTIONS:
        target.direction = name
        return
    if not isinstance(target, MediaDescription):
        return
    if name == "rtpmap":
        pt_text, _, spec = rest.strip().partition(" ")
        pt = _payload_type(pt_text, line_no, line)
        pieces = spec.strip().split("/")
        rate = _decimal(pieces[1], 10) if len(pieces) >= 2 else None
        if not pieces[0] or rate is None:
            raise SdpError("expected 'a=rtpmap:<pt> <encoding>/<rate>[/<channels>]'", line_no, line)
        channels = _decimal(pieces[2], 3) if len(pieces) > 2 else 1
        if channels is None:
            raise SdpError(f"bad channel count {pieces[2]!r}", line_no, line)
        target.rtpmaps[pt] = RtpMap(pieces[0], rate, channels)
    elif name == "fmtp":
        pt_text, _, params = rest.strip().partition(" ")
        target.fmtps[_payload_type(pt_text, line_no, line)] = params.strip()
    elif name == "ptime":
        try:
            ptime = float(rest)
        except ValueError:
            ptime = math.nan
        if not math.isfinite(ptime):  # round() raises OverflowError on "inf", "1e400"
            raise SdpError(f"bad ptime {rest!r}", line_no, line)
        target.ptime = round(ptime)


def parse_sdp(data: bytes) -> SessionDescription:
    """Parse SDP text; ``SdpError`` naming the line on anything structurally wrong."""
    if not data or not data.strip():
        raise SdpError("empty SDP")
    if len(data) > MAX_SDP_BYTES:
        raise SdpError(f"SDP of {len(data)} bytes exceeds {MAX_SDP_BYTES}")
    session: SessionDescription | None = None
    current: MediaDescription | None = None
    for line_no, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.rstrip(b"\r").decode("utf-8")
        except UnicodeDecodeError:
            raise SdpError("not UTF-8 text", line_no, raw.decode("utf-8", "replace")) from None
        if not line.strip():
            continue
        if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
            raise SdpError("expected '<letter>=<value>'", line_no, line)
        kind, value = line[0], line[2:]
        if session is None:
            if kind != "v" or value.strip() != "0":
                raise SdpError("SDP must start with 'v=0'", line_no, line)
            session = SessionDescription(origin="")
            continue
        if kind == "o":
            if len(value.split()) != 6:
                raise SdpError("expected 'o=<user> <id> <version> IN IP4|IP6 <address>'", line_no, line)
            session.origin = value
        elif kind == "t" and current is None:
            session.timing = value.strip()
        elif kind == "c":
            address, address_type = _parse_connection(value, line_no, line)
            if current is None:
                session.address, session.address_type = address, address_type
            else:
                current.address, current.address_type = address, address_type
        elif kind == "m":
            current = _parse_media(value, line_no, line)
            session.media.append(current)
        elif kind == "a":
            _parse_attribute(value, current if current is not None else session, line_no, line)
    if session is None:  # pragma: no cover - only blank lines, caught by the strip() check above
        raise SdpError("empty SDP")
    if not session.media:
        raise SdpError("no 'm=' line")
    for media in session.media:
        if media.address is None and session.address is None and media.port != 0:
            raise SdpError("media has no 'c=' line at media or session level", media.line_no,
                           f"m={media.media} {media.port} {media.proto} {' '.join(media.formats)}")
    return session


_ANSWER_DIRECTION: dict[tuple[bool, bool], Direction] = {
    (True, True): "sendrecv",
    (True, False): "sendonly",
    (False, True): "recvonly",
    (False, False): "inactive",
}


def _directions(theirs: Direction, null_address: bool) -> tuple[bool, bool, bool]:
    """``(we_send, we_receive, on_hold)`` for the peer's direction ``theirs`` (RFC 3264 §6.1).

    The peer's sendonly or inactive, or an RFC 2543 hold address (``c=0.0.0.0``), is a hold: nothing is
    expected from it, and nothing is sent to a null address.
    """
    we_send = theirs in ("sendrecv", "recvonly") and not null_address
    we_receive = theirs in ("sendrecv", "sendonly")
    return we_send, we_receive, null_address or theirs in ("sendonly", "inactive")


def _choose_codec(media: MediaDescription, prefs: Sequence[str]) -> tuple[str, int] | None:
    wanted = {name.upper() for name in prefs}
    for fmt in media.formats:
        pt = _format_pt(fmt)
        if pt is None:
            continue
        mapping = media.rtpmap(pt)
        if (mapping is not None and mapping.encoding.upper() in wanted and mapping.clock_rate == SAMPLE_RATE
                and mapping.channels == 1):
            return mapping.encoding.upper(), pt
    return None


def _format_map(media: MediaDescription, fmt: str) -> RtpMap | None:
    pt = _format_pt(fmt)
    return media.rtpmap(pt) if pt is not None else None


def _telephone_event_pt(media: MediaDescription) -> int | None:
    for fmt in media.formats:
        pt = _format_pt(fmt)
        if pt is None:
            continue
        mapping = media.rtpmaps.get(pt)
        if mapping and mapping.encoding.lower() == TELEPHONE_EVENT and mapping.clock_rate == SAMPLE_RATE:
            return pt
    return None


class SdpSession:
    """The SDP identity of one call leg: ``o=`` session id and version across offers and answers.

    RFC 3264 §8: the version goes up by one whenever the body changes and stays put when a re-answer
    is identical (a session refresh), so peers can tell a real change from a repeat.

    ``o=`` username and ``s=`` are ``-`` by default (RFC 8866 allows it for both): a product name
    there would tell scanners and carriers what answers the call (topology hiding, A26).
    """

    def __init__(self, username: str = "-", session_name: str = "-") -> None:
        self.username = username
        self.session_name = session_name
        self.session_id = random.randrange(1, 2**62)
        self.version = 0
        self._last_body: list[str] | None = None
        self._last_offer = b""
        self._offered_direction: Direction = "sendrecv"

    def _render(self, local_ip: str, body: list[str]) -> bytes:
        if body != self._last_body:
            self.version += 1
            self._last_body = body
        addr_type = "IP6" if ":" in local_ip else "IP4"
        head = [
            "v=0",
            f"o={self.username} {self.session_id} {self.version} IN {addr_type} {local_ip}",
            f"s={self.session_name}",
            f"c=IN {addr_type} {local_ip}",
        ]
        return ("\r\n".join(head + body) + "\r\n").encode()

    def offer(self, local_ip: str, local_port: int, codecs: Sequence[str] = ("PCMU", "PCMA"), *,
              telephone_event_pt: int | None = 101, direction: Direction = "sendrecv") -> bytes:
        """An SDP offer for one audio stream (for calls we place: transfers, tests, agents).

        A re-offer on the same ``SdpSession`` keeps the ``o=`` id and bumps its version; pass
        ``direction="sendonly"`` (we hold, the peer may hear our hold audio) or ``"inactive"`` for a
        hold re-INVITE, and ``"sendrecv"`` again to resume. ``accept_answer`` reads the peer's reply.
        """
        pts = [CODECS[name.upper()].payload_type for name in codecs]
        body = ["t=0 0", f"m=audio {local_port} {SUPPORTED_PROTO} {' '.join(map(str, pts))}"
                + (f" {telephone_event_pt}" if telephone_event_pt is not None else "")]
        body += [f"a=rtpmap:{pt} {name.upper()}/{SAMPLE_RATE}" for pt, name in zip(pts, codecs, strict=True)]
        if telephone_event_pt is not None:
            body += [f"a=rtpmap:{telephone_event_pt} {TELEPHONE_EVENT}/{SAMPLE_RATE}",
                     f"a=fmtp:{telephone_event_pt} 0-15"]
        body += [f"a=ptime:{FRAME_MS}", f"a={direction}"]
        self._last_offer = self._render(local_ip, body)
        self._offered_direction = direction
        return self._last_offer

    def accept_answer(self, answer: bytes, *, offered: Sequence[str]) -> Negotiated:
        """The outcome of our offer (``offer``) from the peer's ``answer`` (e.g. an agent's 200 OK).

        ``offered`` names the codecs we offered; the answer's first of them is the stream's codec, and
        one we did not offer raises ``NoCommonCodec``, as does a rejected stream (port 0). The
        answer's telephone-event type is the one both sides use. Our direction is the complement of
        the answer's, never more than we offered: an answer of sendonly or inactive (or ``c=0.0.0.0``)
        is the peer holding us (``on_hold``, same meaning as in ``answer``). ``answer_sdp`` carries our
        last offer from this ``SdpSession`` (``b""`` if it made none). Our offer has one m-line, so
        only the answer's first is read. ``SdpError`` names the line of anything malformed.
        """
        parsed = parse_sdp(answer)
        media = parsed.media[0]
        m_line = f"m={media.media} {media.port} {media.proto} {' '.join(media.formats)}"
        if media.media != "audio" or media.proto != SUPPORTED_PROTO:
            raise SdpError(f"the answer's first m-line must answer our audio {SUPPORTED_PROTO} stream",
                           media.line_no, m_line)
        if media.port == 0:
            raise NoCommonCodec(f"SDP line {media.line_no}: {m_line!r}: the peer rejected our audio stream")
        codec = _choose_codec(media, offered)
        if codec is None:
            answered = ", ".join(
                f"{fmt} {mapping.encoding}/{mapping.clock_rate}" if (mapping := _format_map(media, fmt))
                else fmt for fmt in media.formats)
            raise NoCommonCodec(f"SDP line {media.line_no}: {m_line!r}: the answer picked none of the "
                                f"codecs we offered ({'/'.join(offered)}): {answered}")
        address = media.address or parsed.address
        assert address is not None  # parse_sdp requires a c= line for every stream with a port
        theirs: Direction = media.direction or parsed.direction or "sendrecv"
        we_send, we_receive, on_hold = _directions(theirs, ipaddress.ip_address(address).is_unspecified)
        we_send = we_send and self._offered_direction in ("sendrecv", "sendonly")
        we_receive = we_receive and self._offered_direction in ("sendrecv", "recvonly")
        name, pt = codec
        return Negotiated(
            remote=(address, media.port), codec=name, payload_type=pt,
            telephone_event_pt=_telephone_event_pt(media), direction=_ANSWER_DIRECTION[(we_send, we_receive)],
            on_hold=on_hold, ptime=FRAME_MS, remote_ptime=media.ptime, answer_sdp=self._last_offer,
        )

    def answer(self, offer: bytes, local_ip: str, local_port: int,
               prefs: Sequence[str] = ("PCMU", "PCMA")) -> Negotiated:
        """Answer ``offer``: the first audio stream with a codec in ``prefs`` (offer order wins).

        Every m-line is answered; ones we don't take (video, SRTP, a second audio stream, port 0)
        get port 0. ``NoCommonCodec`` when no audio stream fits; ``SdpError`` on malformed text.
        """
        parsed = parse_sdp(offer)
        local_type = "IP6" if ":" in local_ip else "IP4"
        body = [f"t={parsed.timing or '0 0'}"]
        chosen: Negotiated | None = None
        for media in parsed.media:
            address = media.address or parsed.address
            address_type = media.address_type or parsed.address_type
            codec = None
            if (chosen is None and media.media == "audio" and media.port != 0
                    and media.proto == SUPPORTED_PROTO and address_type == local_type):
                codec = _choose_codec(media, prefs)
            if codec is None or address is None:
                body.append(f"m={media.media} 0 {media.proto} {' '.join(media.formats)}")
                continue
            name, pt = codec
            te_pt = _telephone_event_pt(media)
            offered: Direction = media.direction or parsed.direction or "sendrecv"
            null_address = ipaddress.ip_address(address).is_unspecified
            we_send, we_receive, on_hold = _directions(offered, null_address)
            direction = _ANSWER_DIRECTION[(we_send, we_receive)]
            formats = f"{pt} {te_pt}" if te_pt is not None else str(pt)
            body.append(f"m=audio {local_port} {SUPPORTED_PROTO} {formats}")
            body.append(f"a=rtpmap:{pt} {name}/{SAMPLE_RATE}")
            if te_pt is not None:
                body += [f"a=rtpmap:{te_pt} {TELEPHONE_EVENT}/{SAMPLE_RATE}", f"a=fmtp:{te_pt} 0-15"]
            body += [f"a=ptime:{FRAME_MS}", f"a={direction}"]
            chosen = Negotiated(
                remote=(address, media.port), codec=name, payload_type=pt, telephone_event_pt=te_pt,
                direction=direction, on_hold=on_hold, ptime=FRAME_MS, remote_ptime=media.ptime,
                answer_sdp=b"",
            )
        if chosen is None:
            offered_media = ", ".join(f"{m.media} {m.proto} {' '.join(m.formats)}" for m in parsed.media)
            raise NoCommonCodec(f"no audio stream with {'/'.join(prefs)} over {SUPPORTED_PROTO} "
                                f"in the offer ({offered_media})")
        return replace(chosen, answer_sdp=self._render(local_ip, body))


def negotiate(offer: bytes, local_ip: str, local_port: int, prefs: Sequence[str] = ("PCMU", "PCMA"), *,
              session: SdpSession | None = None) -> Negotiated:
    """Answer ``offer`` (see ``SdpSession.answer``); pass the call's ``session`` on re-INVITEs."""
    return (session or SdpSession()).answer(offer, local_ip, local_port, prefs)
