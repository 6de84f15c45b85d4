"""SDP offer/answer: codec choice, telephone-event, m-line answering, hold, errors naming the line."""

from __future__ import annotations

import re

import pytest

from helpline.voice.sdp import NoCommonCodec, SdpError, SdpSession, negotiate, parse_sdp

LOCAL = "192.0.2.10"


def sdp(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode()


def base(*media: str, connection: str = "c=IN IP4 203.0.113.5") -> bytes:
    return sdp("v=0", "o=carrier 42 7 IN IP4 203.0.113.5", "s=call", connection, "t=0 0", *media)


def m_lines(answer: bytes) -> list[str]:
    return [line for line in answer.decode().split("\r\n") if line.startswith("m=")]


def test_offer_order_wins_over_our_preference() -> None:
    got = negotiate(base("m=audio 4000 RTP/AVP 8 0 101", "a=rtpmap:101 telephone-event/8000"), LOCAL, 10000)
    assert (got.codec, got.payload_type) == ("PCMA", 8)
    assert got.remote == ("203.0.113.5", 4000)
    assert m_lines(got.answer_sdp) == ["m=audio 10000 RTP/AVP 8 101"]


def test_pcma_only_offer_without_rtpmap_or_telephone_event() -> None:
    got = negotiate(base("m=audio 4000 RTP/AVP 8"), LOCAL, 10000)
    assert (got.codec, got.payload_type, got.telephone_event_pt) == ("PCMA", 8, None)
    assert "telephone-event" not in got.answer_sdp.decode()
    assert "a=rtpmap:8 PCMA/8000" in got.answer_sdp.decode()


@pytest.mark.parametrize("te_pt", [96, 101, 127])
def test_offered_telephone_event_payload_type_is_honoured(te_pt: int) -> None:
    offer = base(f"m=audio 4000 RTP/AVP 0 {te_pt}", f"a=rtpmap:{te_pt} telephone-event/8000",
                 f"a=fmtp:{te_pt} 0-16")
    got = negotiate(offer, LOCAL, 10000)
    assert got.telephone_event_pt == te_pt
    text = got.answer_sdp.decode()
    assert f"m=audio 10000 RTP/AVP 0 {te_pt}\r\n" in text
    assert f"a=rtpmap:{te_pt} telephone-event/8000" in text


def test_telephone_event_at_another_clock_rate_is_not_taken() -> None:
    offer = base("m=audio 4000 RTP/AVP 0 100 101", "a=rtpmap:100 telephone-event/48000",
                 "a=rtpmap:101 telephone-event/8000")
    assert negotiate(offer, LOCAL, 10000).telephone_event_pt == 101


def test_dynamic_payload_type_mapped_to_pcmu() -> None:
    got = negotiate(base("m=audio 4000 RTP/AVP 97", "a=rtpmap:97 pcmu/8000"), LOCAL, 10000)
    assert (got.codec, got.payload_type) == ("PCMU", 97)


def test_every_m_line_is_answered_unsupported_ones_with_port_zero() -> None:
    offer = base(
        "m=video 5000 RTP/AVP 96", "a=rtpmap:96 H264/90000",
        "m=audio 4000 RTP/SAVP 0", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:xxxx",
        "m=audio 4002 RTP/AVP 0 101", "a=rtpmap:101 telephone-event/8000",
        "m=audio 4004 RTP/AVP 8",
    )
    got = negotiate(offer, LOCAL, 10000)
    assert m_lines(got.answer_sdp) == [
        "m=video 0 RTP/AVP 96", "m=audio 0 RTP/SAVP 0", "m=audio 10000 RTP/AVP 0 101", "m=audio 0 RTP/AVP 8",
    ]
    assert got.remote == ("203.0.113.5", 4002)


@pytest.mark.parametrize("media", [
    ("m=audio 4000 RTP/AVP 18", "a=rtpmap:18 G729/8000"),
    ("m=audio 4000 RTP/AVP 9 101", "a=rtpmap:101 telephone-event/8000"),
    ("m=audio 4000 RTP/SAVP 0",),
    ("m=audio 0 RTP/AVP 0",),
    ("m=video 5000 RTP/AVP 96",),
    ("m=audio 4000 RTP/AVP 96", "a=rtpmap:96 PCMU/16000"),
])
def test_no_common_codec(media: tuple[str, ...]) -> None:
    with pytest.raises(NoCommonCodec, match="no audio stream"):
        negotiate(base(*media), LOCAL, 10000)


def test_prefs_restrict_what_we_take() -> None:
    with pytest.raises(NoCommonCodec):
        negotiate(base("m=audio 4000 RTP/AVP 0"), LOCAL, 10000, prefs=("PCMA",))


@pytest.mark.parametrize(("text", "line_no", "reason"), [
    (b"", None, "empty SDP"),
    (b"hello world", 1, "letter>=<value"),
    (b"v=1\r\n", 1, "v=0"),
    (b"v=0\r\no=a 1 1 IN IP4 1.2.3.4\r\nthis is junk\r\n", 3, "letter>=<value"),
    (b"v=0\r\nc=IN IP4 not-an-ip\r\nm=audio 1 RTP/AVP 0\r\n", 2, "not an IP address"),
    (b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 99999 RTP/AVP 0\r\n", 3, "bad port"),
    (b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000\r\n", 3, "expected 'm="),
    (b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:abc PCMU/8000\r\n", 4, "payload type"),
    (b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU\r\n", 4, "rtpmap"),
    (b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 0\r\na=ptime:x\r\n", 4, "ptime"),
    (b"v=0\r\nc=IN IP4 1.2.3.4\r\ns=\xff\xfe\r\n", 3, "UTF-8"),
    (b"v=0\r\no=a 1 1 IN IP4 1.2.3.4\r\n", None, "no 'm=' line"),
    (b"v=0\r\nm=audio 4000 RTP/AVP 0\r\n", 2, "no 'c=' line"),
])
def test_junk_raises_sdp_error_naming_the_line(text: bytes, line_no: int | None, reason: str) -> None:
    with pytest.raises(SdpError) as caught:
        negotiate(text, LOCAL, 10000)
    assert caught.value.line_no == line_no
    assert reason in str(caught.value)
    if line_no is not None:
        assert f"line {line_no}" in str(caught.value)


@pytest.mark.parametrize(("offered", "answered", "on_hold", "sends", "receives"), [
    ("sendrecv", "sendrecv", False, True, True),
    ("sendonly", "recvonly", True, False, False),
    ("recvonly", "sendonly", False, True, False),
    ("inactive", "inactive", True, False, False),
])
def test_direction_attributes(offered: str, answered: str, on_hold: bool, sends: bool,
                              receives: bool) -> None:
    got = negotiate(base("m=audio 4000 RTP/AVP 0", f"a={offered}"), LOCAL, 10000)
    assert (got.direction, got.on_hold, got.sends, got.receives) == (answered, on_hold, sends, receives)
    assert f"a={answered}\r\n" in got.answer_sdp.decode()


def test_session_level_direction_applies_to_media() -> None:
    offer = sdp("v=0", "o=c 1 1 IN IP4 203.0.113.5", "s=-", "c=IN IP4 203.0.113.5", "t=0 0", "a=sendonly",
                "m=audio 4000 RTP/AVP 0")
    assert negotiate(offer, LOCAL, 10000).direction == "recvonly"


def test_null_connection_address_is_hold() -> None:
    got = negotiate(base("m=audio 4000 RTP/AVP 0", connection="c=IN IP4 0.0.0.0"), LOCAL, 10000)
    assert got.on_hold and not got.sends and not got.receives
    assert got.direction == "recvonly"


def test_media_level_connection_overrides_session_level() -> None:
    offer = base("m=audio 4000 RTP/AVP 0", "c=IN IP4 198.51.100.7")
    assert negotiate(offer, LOCAL, 10000).remote == ("198.51.100.7", 4000)


def test_ptime_is_recorded_and_we_answer_20() -> None:
    got = negotiate(base("m=audio 4000 RTP/AVP 0", "a=ptime:30"), LOCAL, 10000)
    assert (got.remote_ptime, got.ptime) == (30, 20)
    assert "a=ptime:20" in got.answer_sdp.decode()


def test_answer_is_valid_sdp_with_our_address() -> None:
    got = negotiate(base("m=audio 4000 RTP/AVP 0 101", "a=rtpmap:101 telephone-event/8000"), LOCAL, 10000)
    parsed = parse_sdp(got.answer_sdp)
    assert parsed.address == LOCAL
    assert parsed.media[0].port == 10000
    assert parsed.media[0].rtpmap(0) is not None


def origin(answer: bytes) -> tuple[str, int]:
    match = re.search(r"^o=\S+ (\d+) (\d+) IN IP4 ", answer.decode(), re.M)
    assert match
    return match.group(1), int(match.group(2))


def test_origin_stable_per_session_and_versioned_on_change() -> None:
    session = SdpSession()
    talking = base("m=audio 4000 RTP/AVP 0")
    first = session.answer(talking, LOCAL, 10000)
    refresh = session.answer(talking, LOCAL, 10000)
    hold = session.answer(base("m=audio 4000 RTP/AVP 0", "a=sendonly"), LOCAL, 10000)
    resume = negotiate(talking, LOCAL, 10000, session=session)
    sid, v1 = origin(first.answer_sdp)
    assert origin(refresh.answer_sdp) == (sid, v1)  # identical re-answer keeps the version (RFC 3264 §8)
    assert origin(hold.answer_sdp) == (sid, v1 + 1)
    assert origin(resume.answer_sdp) == (sid, v1 + 2)
    assert origin(SdpSession().answer(talking, LOCAL, 10000).answer_sdp)[0] != sid


def test_offer_round_trips_through_answer() -> None:
    ours = SdpSession().offer("198.51.100.1", 20000, ("PCMA", "PCMU"), telephone_event_pt=101)
    got = negotiate(ours, LOCAL, 10000)
    assert (got.codec, got.telephone_event_pt, got.remote) == ("PCMA", 101, ("198.51.100.1", 20000))
