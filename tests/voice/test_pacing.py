"""Outgoing pacing as a receiver in another process sees it: 20 ms spacing, no loss, no drift."""

from __future__ import annotations

import asyncio

import pytest

from helpline.voice import MediaEngine, PromptSpec, negotiate
from tests.support.kernel_probe import run_probe
from tests.voice.media_support import HOST, offer


async def test_fifty_sessions_are_paced_at_20ms(engine: MediaEngine) -> None:
    tone = await engine.prompts.get(PromptSpec(tone_hz=(440.0,), duration_ms=1000))
    async with run_probe(50, 3.0) as (ports, result):
        sessions = []
        for port in ports:
            session = await engine.open_session(f"call-{port}")
            session.start(negotiate(offer(port), HOST, session.local_port))
            sessions.append(session)
        plays = [asyncio.ensure_future(s.play(tone)) for s in sessions[::2]]  # half play, half silence
        report = await result
    for session in sessions:
        session.close()
    assert all(p.done() for p in plays)
    assert report["lost"] == 0
    assert report["packets"] >= 50 * 120
    assert 18.0 <= report["interval_mean_ms"] <= 22.0
    assert report["interval_p95_ms"] <= 22.0
    assert report["interval_p5_ms"] >= 18.0
    for stream in report["streams"]:
        assert stream["ts_steps_off"] == 0
        assert 18.0 <= stream["interval_mean_ms"] <= 22.0


@pytest.mark.asyncio(loop_factories=["uvloop"])
async def test_no_drift_over_ten_seconds(engine: MediaEngine) -> None:
    async with run_probe(1, 10.5) as (ports, result):
        session = await engine.open_session("long-call")
        session.start(negotiate(offer(ports[0]), HOST, session.local_port))
        report = await result
    session.close()
    stream = report["streams"][0]
    assert stream["span_s"] >= 9.5
    # A pacer that slipped by even 1 % would be 5 packets short over this span.
    assert abs((stream["packets"] - 1) - stream["span_s"] / 0.020) <= 1.5
    assert stream["lost"] == 0
