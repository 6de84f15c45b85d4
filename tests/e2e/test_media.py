"""Audio over the wire: the caller side receives Helpline's RTP, decodes it and hears the right prompts."""

from __future__ import annotations

import asyncio

from tests.e2e.server import RunningServer
from tests.support.kernel_probe import run_probe
from tests.support.rtp_probe import RtpProbe, make_sdp_offer
from tests.support.sip_uac import SipUac, UacCall

TONES = (440.0, 600.0, 1000.0, 2000.0)


async def _call(uac: SipUac, probe: RtpProbe, server: RunningServer, did: str,
                codecs: tuple[str, ...] = ("PCMU", "PCMA")) -> UacCall:
    call = await uac.invite(
        f"sip:{did}@127.0.0.1:{server.sip_port}", make_sdp_offer(probe.local_port, codecs=codecs)
    )
    assert call.status == 200, call.responses
    assert call.media is not None
    probe.use_answer(call.media)
    return call


async def test_prompts_are_heard_and_a_digit_changes_them(server: RunningServer) -> None:
    async with await SipUac.open() as uac, await RtpProbe.open() as probe:
        call = await _call(uac, probe, server, "+18005550101")
        probe.start_audio()  # the caller's silence keeps the media timeout away, as a phone would
        greeting_start = probe.now()
        await probe.wait_for_tone(440.0, timeout=3, candidates=TONES)
        await asyncio.sleep(0.9)  # greeting (400 ms) and the menu prompt (400 ms) have played
        before_digit = probe.now()
        await probe.send_dtmf("1")
        await probe.wait_for_tone(1000.0, timeout=3, candidates=TONES)
        after = probe.now()
        await asyncio.sleep(0.6)
        assert probe.dominant_tone(TONES, since=greeting_start, until=greeting_start + 0.35) == 440.0
        # nothing but the greeting and menu tones before the key press
        assert probe.dominant_tone(TONES, since=greeting_start, until=before_digit) != 1000.0
        assert probe.dominant_tone(TONES, since=after, until=after + 0.5) == 1000.0
        assert await call.wait_remote_bye(10), "the flow hangs up after the 1 kHz branch"
        await probe.stop_audio()
    detail = await asyncio.to_thread(server.wait_call, sip_call_id=call.call_id)
    assert [e["data"]["name"] for e in detail["events"] if e["type"] == "ivr.milestone"] == ["branch_1"]


async def test_pcma_only_offer_gets_alaw_audio(server: RunningServer) -> None:
    async with await SipUac.open() as uac, await RtpProbe.open() as probe:
        call = await _call(uac, probe, server, "+18005550102", codecs=("PCMA",))
        assert call.media is not None and call.media.codec == "PCMA"
        await probe.wait_for_packets(25, timeout=3)
        assert {p.payload_type for p in probe.audio_packets()} == {8}
        assert probe.dominant_tone(TONES) == 600.0
        assert await call.bye() == 200


async def test_offer_without_common_codec_gets_488(server: RunningServer) -> None:
    async with await SipUac.open() as uac:
        sdp = (
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "m=audio 40000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n"
        )
        call = await uac.invite(f"sip:+18005550102@127.0.0.1:{server.sip_port}", sdp)
        assert call.status == 488
    detail = await asyncio.to_thread(server.wait_call, sip_call_id=call.call_id)
    assert detail["disposition"] == "refused" and detail["sip_code"] == 488


async def test_packet_spacing_across_50_concurrent_calls(server: RunningServer) -> None:
    """20 ms ± 2 ms at the receiver, for every one of 50 calls held in a long prompt.

    The receiver is a separate process stamping arrivals in the kernel, so the test's own loop (placing
    50 calls) cannot pass for jitter. No caller audio is needed: the calls last less than the 8 s
    media timeout of the test configuration.
    """
    async with run_probe(50, 6.0) as (ports, report_future), await SipUac.open() as uac:
        target = f"sip:+18005550102@127.0.0.1:{server.sip_port}"
        calls = await asyncio.gather(*(uac.invite(target, make_sdp_offer(port)) for port in ports))
        assert [c.status for c in calls] == [200] * 50
        report = await report_future
        byes = await asyncio.gather(*(c.bye() for c in calls))
    assert byes == [200] * 50
    streams = report["streams"]
    assert len(streams) == 50
    for stream in streams:
        assert stream["packets"] >= 200, stream
        assert stream["lost"] == 0, stream
        assert stream["ts_steps_off"] == 0, stream
        assert abs(stream["interval_mean_ms"] - 20.0) <= 2.0, stream
        assert stream["interval_p95_ms"] <= 22.0, stream
    # all 50 streams together: 90 % of the intervals within 20 ms ± 2 ms
    assert report["interval_p5_ms"] >= 18.0 and report["interval_p95_ms"] <= 22.0, report


async def test_caller_silence_ends_the_call_by_media_timeout(server: RunningServer) -> None:
    async with await SipUac.open() as uac, await RtpProbe.open() as probe:
        probe_port = probe.local_port
        call = await _call(uac, probe, server, "+18005550102")
        await probe.send_silence(1.0)  # RTP flows, then stops: the caller's side went dead
        assert await call.wait_remote_bye(15), "no BYE after the media timeout (8 s in the test config)"
    detail = await asyncio.to_thread(server.wait_call, sip_call_id=call.call_id)
    assert detail["disposition"] == "failed"
    assert detail["end_reason"] == "media timeout"
    assert any(e["type"] == "media.timeout" for e in detail["events"])
    assert probe_port > 0


async def test_rtp_from_a_stranger_is_ignored(server: RunningServer) -> None:
    """RTP bleed: once the caller's source is locked, another source gets nothing back."""
    async with await SipUac.open() as uac, await RtpProbe.open() as probe, await RtpProbe.open() as stranger:
        call = await _call(uac, probe, server, "+18005550102")
        probe.start_audio()
        await asyncio.sleep(2.6)  # past the 2 s learn window
        assert call.media is not None
        stranger.set_remote("127.0.0.1", call.media.port, codec="PCMU", dtmf_pt=101)
        await stranger.send_tone(1000.0, 1.0)
        await asyncio.sleep(0.3)
        assert stranger.received == [], "Helpline sent media to a source that was never signalled"
        assert probe.dominant_tone(TONES, since=probe.now() - 1.0) == 600.0
        await probe.stop_audio()
        assert await call.bye() == 200
