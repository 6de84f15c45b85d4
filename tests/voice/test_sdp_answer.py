"""SdpSession.accept_answer: reading the answer to an offer we made (agent legs), and hold re-offers."""

from __future__ import annotations

import re

import pytest

from helpline.voice import NoCommonCodec, SdpError, SdpSession

LOCAL = "192.0.2.10"
PHONE = "198.51.100.20"
BOTH = ("PCMU", "PCMA")


def answer(*media: str, connection: str = f"c=IN IP4 {PHONE}") -> bytes:
    """A softphone's answer, written by hand."""
    lines = ["v=0", f"o=phone 77 2 IN IP4 {PHONE}", "s=-", connection, "t=0 0", *media]
    return ("\r\n".join(lines) + "\r\n").encode()


def origin(sdp: bytes) -> tuple[str, int]:
    match = re.search(r"^o=\S+ (\d+) (\d+) IN IP4 ", sdp.decode(), re.M)
    assert match
    return match.group(1), int(match.group(2))


def test_codec_telephone_event_and_address_come_from_the_answer() -> None:
    session = SdpSession()
    ours = session.offer(LOCAL, 20000, BOTH)
    got = session.accept_answer(
        answer("m=audio 7078 RTP/AVP 8 101", "a=rtpmap:8 PCMA/8000", "a=rtpmap:101 telephone-event/8000",
               "a=ptime:30"),
        offered=BOTH)
    assert (got.codec, got.payload_type, got.telephone_event_pt) == ("PCMA", 8, 101)
    assert got.remote == (PHONE, 7078)
    assert (got.direction, got.on_hold, got.sends, got.receives) == ("sendrecv", False, True, True)
    assert (got.ptime, got.remote_ptime) == (20, 30)
    assert got.answer_sdp == ours  # the body we sent in this exchange


def test_first_offered_codec_of_the_answer_wins_and_dynamic_event_type_is_kept() -> None:
    session = SdpSession()
    session.offer(LOCAL, 20000, BOTH)
    got = session.accept_answer(
        answer("m=audio 7078 RTP/AVP 18 0 8 96", "a=rtpmap:18 G729/8000", "a=rtpmap:96 telephone-event/8000",
               "c=IN IP4 203.0.113.9"),
        offered=BOTH)
    assert (got.codec, got.payload_type, got.telephone_event_pt) == ("PCMU", 0, 96)
    assert got.remote == ("203.0.113.9", 7078)  # media-level c= wins


def test_answer_without_telephone_event() -> None:
    session = SdpSession()
    session.offer(LOCAL, 20000, BOTH)
    got = session.accept_answer(answer("m=audio 7078 RTP/AVP 0"), offered=BOTH)
    assert (got.codec, got.telephone_event_pt) == ("PCMU", None)


def test_answer_without_a_prior_offer_has_no_body() -> None:
    got = SdpSession().accept_answer(answer("m=audio 7078 RTP/AVP 0"), offered=BOTH)
    assert got.answer_sdp == b""
    assert got.direction == "sendrecv"


@pytest.mark.parametrize(("media", "offered", "names"), [
    (("m=audio 7078 RTP/AVP 8",), ("PCMU",), "8 PCMA/8000"),
    (("m=audio 7078 RTP/AVP 18", "a=rtpmap:18 G729/8000"), BOTH, "18 G729/8000"),
    (("m=audio 7078 RTP/AVP 96", "a=rtpmap:96 opus/48000/2"), BOTH, "96 opus/48000"),
])
def test_a_codec_we_did_not_offer_is_no_common_codec_naming_the_line(media: tuple[str, ...],
                                                                     offered: tuple[str, ...],
                                                                     names: str) -> None:
    session = SdpSession()
    session.offer(LOCAL, 20000, offered)
    with pytest.raises(NoCommonCodec) as caught:
        session.accept_answer(answer(*media), offered=offered)
    text = str(caught.value)
    assert f"SDP line 6: '{media[0]}'" in text
    assert "/".join(offered) in text and names in text


def test_rejected_stream_is_no_common_codec() -> None:
    with pytest.raises(NoCommonCodec, match=r"SDP line 6: 'm=audio 0 RTP/AVP 0'.*rejected"):
        SdpSession().accept_answer(answer("m=audio 0 RTP/AVP 0"), offered=BOTH)


@pytest.mark.parametrize(("text", "line_no", "reason"), [
    (answer("m=video 7078 RTP/AVP 96"), 6, "first m-line must answer our audio RTP/AVP stream"),
    (answer("m=audio 7078 RTP/SAVP 0"), 6, "first m-line must answer our audio RTP/AVP stream"),
    (answer("m=audio 7078 RTP/AVP 0", "a=rtpmap:x PCMU/8000"), 7, "bad payload type"),
    (answer("m=audio 7078 RTP/AVP 0", connection="c=IN IP4 phone.example"), 4, "not an IP address"),
    (b"v=0\r\no=phone 1 1 IN IP4 1.2.3.4\r\nSIP/2.0 200 OK\r\n", 3, "letter>=<value"),
    (b"", None, "empty SDP"),
])
def test_malformed_answer_raises_sdp_error_naming_the_line(text: bytes, line_no: int | None,
                                                           reason: str) -> None:
    with pytest.raises(SdpError) as caught:
        SdpSession().accept_answer(text, offered=BOTH)
    assert caught.value.line_no == line_no
    assert reason in str(caught.value)
    if line_no is not None:
        assert f"SDP line {line_no}:" in str(caught.value)


@pytest.mark.parametrize(("theirs", "ours", "on_hold", "sends", "receives"), [
    ("sendrecv", "sendrecv", False, True, True),
    ("sendonly", "recvonly", True, False, False),  # the phone holds us
    ("recvonly", "sendonly", False, True, False),
    ("inactive", "inactive", True, False, False),
])
def test_our_direction_is_the_complement_of_the_answer(theirs: str, ours: str, on_hold: bool, sends: bool,
                                                       receives: bool) -> None:
    session = SdpSession()
    session.offer(LOCAL, 20000, BOTH)
    got = session.accept_answer(answer("m=audio 7078 RTP/AVP 0", f"a={theirs}"), offered=BOTH)
    assert (got.direction, got.on_hold, got.sends, got.receives) == (ours, on_hold, sends, receives)


def test_null_address_in_the_answer_is_hold() -> None:
    session = SdpSession()
    session.offer(LOCAL, 20000, BOTH)
    got = session.accept_answer(answer("m=audio 7078 RTP/AVP 0", connection="c=IN IP4 0.0.0.0"),
                                offered=BOTH)
    assert got.on_hold and not got.sends and not got.receives


def test_hold_re_offer_and_resume_on_the_same_session() -> None:
    session = SdpSession()
    talking = session.offer(LOCAL, 20000, BOTH)
    session.accept_answer(answer("m=audio 7078 RTP/AVP 0"), offered=BOTH)
    hold = session.offer(LOCAL, 20000, BOTH, direction="sendonly")
    assert "a=sendonly\r\n" in hold.decode() and "a=sendrecv" not in hold.decode()
    sid, version = origin(talking)
    assert origin(hold) == (sid, version + 1)
    held = session.accept_answer(answer("m=audio 7078 RTP/AVP 0", "a=recvonly"), offered=BOTH)
    assert (held.direction, held.on_hold, held.sends, held.receives) == ("sendonly", False, True, False)
    assert held.answer_sdp == hold
    # A sloppy phone answering sendrecv to our sendonly still gets nothing from us to expect.
    sloppy = session.accept_answer(answer("m=audio 7078 RTP/AVP 0", "a=sendrecv"), offered=BOTH)
    assert (sloppy.direction, sloppy.receives) == ("sendonly", False)
    inactive = session.offer(LOCAL, 20000, BOTH, direction="inactive")
    assert "a=inactive\r\n" in inactive.decode()
    assert origin(inactive) == (sid, version + 2)
    assert session.accept_answer(answer("m=audio 7078 RTP/AVP 0", "a=inactive"),
                                 offered=BOTH).direction == "inactive"
    resume = session.offer(LOCAL, 20000, BOTH)
    assert origin(resume) == (sid, version + 3)
    assert session.accept_answer(answer("m=audio 7078 RTP/AVP 0"), offered=BOTH).direction == "sendrecv"
