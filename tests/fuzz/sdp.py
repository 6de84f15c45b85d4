"""Fuzz target: an SDP body from the wire through our offer/answer code.

Both directions the service uses: ``negotiate`` answers a caller's offer (INVITE and re-INVITE, the
call manager catches ``NoCommonCodec`` and ``SdpError`` -> 488) and ``SdpSession.accept_answer`` reads an
agent's answer to our offer (the queue runtime catches the same two). Any other exception is a crash:
it would escape the call setup as a 500, or a re-INVITE as an unhandled error.

On success the answer is checked against RFC 3264 as well: it parses with our own parser, answers every
offered m-line, takes exactly one stream (on our port), and answering the same offer again in the same
session gives the same body with the same ``o=`` version (a session refresh, §8).
"""

from __future__ import annotations

from helpline.voice.sdp import NoCommonCodec, SdpError, SdpSession, negotiate, parse_sdp
from tests.fuzz.harness import Finding, fuzz

TARGET = "sdp"
MAX_LEN = 8192
LOCAL_PORT = 40000
LOCALS = (("192.0.2.10", ("PCMU", "PCMA")), ("2001:db8::10", ("PCMA",)))
OFFERED = ("PCMU", "PCMA")


def _check_answer(data: bytes, local_ip: str, prefs: tuple[str, ...]) -> None:
    session = SdpSession()
    try:
        negotiated = negotiate(data, local_ip, LOCAL_PORT, prefs, session=session)
    except (NoCommonCodec, SdpError):
        return
    offer = parse_sdp(data)
    try:
        answer = parse_sdp(negotiated.answer_sdp)
    except SdpError as exc:
        raise Finding(f"our answer does not parse: {exc}\n{negotiated.answer_sdp!r}") from exc
    if len(answer.media) != len(offer.media):
        raise Finding(f"{len(offer.media)} m-lines offered, {len(answer.media)} answered")
    taken = [m for m in answer.media if m.port != 0]
    if len(taken) != 1 or taken[0].port != LOCAL_PORT:
        raise Finding(f"the answer takes {[m.port for m in taken]}, not one stream on {LOCAL_PORT}")
    if negotiated.codec not in prefs or not 0 < negotiated.remote[1] <= 65535:
        raise Finding(f"negotiated {negotiated.codec} to {negotiated.remote}")
    again = negotiate(data, local_ip, LOCAL_PORT, prefs, session=session)
    if again.answer_sdp != negotiated.answer_sdp:
        raise Finding("the same offer answered twice in one session gave two bodies")


def _check_accept(data: bytes) -> None:
    session = SdpSession()
    session.offer("192.0.2.10", LOCAL_PORT, OFFERED)
    try:
        negotiated = session.accept_answer(data, offered=OFFERED)
    except (NoCommonCodec, SdpError):
        return
    if negotiated.codec not in OFFERED or not 0 < negotiated.remote[1] <= 65535:
        raise Finding(f"accepted {negotiated.codec} to {negotiated.remote}")


def check(data: bytes) -> None:
    """``data`` as a caller's offer (IPv4 and IPv6 side) and as an agent's answer."""
    for local_ip, prefs in LOCALS:
        _check_answer(data, local_ip, prefs)
    _check_accept(data)


if __name__ == "__main__":
    fuzz(TARGET, check, max_len=MAX_LEN, dictionaries=("common", "sdp"))
