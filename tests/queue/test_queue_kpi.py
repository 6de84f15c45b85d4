"""KPIs from a hand-written event log with answers worked out by hand (see the comments)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from helpline.queue.config import QueueConfig
from helpline.queue.kpi import compute_kpis
from tests.queue.queue_world import World

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def ev(
    at: float, kind: str, call_id: str | None = None, as_datetime: bool = False, **data: Any
) -> dict[str, Any]:
    return {"type": kind, "at": T0 + timedelta(seconds=at) if as_datetime else T0.timestamp() + at,
            "call_id": call_id, "data": data}  # fmt: skip


def agent(at: float, ext: str, presence: str, activity: str, **extra: Any) -> dict[str, Any]:
    return ev(at, "agent.activity", None, extension=ext, presence=presence, activity=activity, reachable=True,
              **extra)  # fmt: skip


LOG = [
    ev(0, "queue.joined", "c1", queue="q"),
    ev(2, "queue.ewt", "c1", queue="q", p50_s=10.0, p90_s=12.0),  # realised 8: error +2, covered
    ev(5, "queue.joined", "c2", queue="q", as_datetime=True),
    ev(10, "queue.connected", "c1", queue="q", wait_s=10.0),  # within 20 s
    ev(10, "queue.joined", "c3", queue="q"),
    ev(10, "queue.ewt", "c2", queue="q", p50_s=20.0, p90_s=40.0),  # realised 30: error -10, covered
    ev(13, "queue.left", "c3", queue="q", reason="abandoned", wait_s=3.0),  # short abandon
    ev(20, "queue.joined", "c4", queue="q"),
    ev(25, "queue.ewt", "c4", queue="q", p50_s=1.0, p90_s=2.0),  # c4 abandons: censored, ignored
    ev(30, "queue.joined", "c5", queue="q"),
    ev(30, "queue.ewt", "c2", queue="q", p50_s=5.0, p90_s=8.0),  # realised 10: error -5, not covered
    ev(40, "queue.connected", "c2", queue="q", wait_s=35.0, as_datetime=True),
    ev(50, "queue.left", "c4", queue="q", reason="abandoned", wait_s=30.0),
    ev(330, "queue.left", "c5", queue="q", reason="timeout", wait_s=300.0),
    ev(0, "queue.joined", "v1", queue="vip"),
    ev(4, "queue.connected", "v1", queue="vip", wait_s=4.0),
    ev(4, "queue.left", "v1", queue="vip", reason="answered", wait_s=4.0),
    # agent 100: available 0-10, handling 10-140, available 140-200, not ready after
    agent(0, "100", "ready", "idle"),
    agent(8, "100", "ready", "offered"),
    agent(10, "100", "ready", "connected"),
    agent(130, "100", "ready", "wrapup"),
    agent(
        140,
        "100",
        "ready",
        "idle",
        handled={"call_id": "c1", "queue": "q", "talk_s": 100.0, "hold_s": 20.0, "wrapup_s": 10.0},
    ),
    ev(200, "agent.presence", None, extension="100", presence="not_ready", reason="break", activity="idle"),
    # agent 101: available 0-40, handling 40-100, available 100-300
    agent(0, "101", "ready", "idle"),
    agent(38, "101", "ready", "offered"),
    agent(40, "101", "ready", "connected"),
    agent(90, "101", "ready", "wrapup"),
    agent(
        100,
        "101",
        "ready",
        "idle",
        handled={"call_id": "c2", "queue": "q", "talk_s": 50.0, "hold_s": 0.0, "wrapup_s": 10.0},
    ),
    ev(300, "call.ended", "c1", disposition="completed"),  # not a queue event: ignored
]


def test_kpis_from_a_known_log() -> None:
    kpis = compute_kpis(list(reversed(LOG)), sl_threshold_s=20, short_abandon_s=5,
                        until=T0.timestamp() + 300)  # fmt: skip
    q = kpis.queues["q"]
    assert (q.offered, q.answered, q.answered_within_threshold, q.abandoned, q.short_abandons) == (
        5,
        2,
        1,
        2,
        1,
    )
    assert q.other_exits == 0  # c5's timeout at 330 s is outside the window
    assert q.service_level == pytest.approx(1 / 3, abs=1e-4)  # 1 / (2 + 2 - 1)
    assert q.asa_s == 22.5
    assert q.abandonment_rate == 0.25  # (2 - 1) / (5 - 1)
    assert q.aht_s == 95.0 and q.handled == 2  # (130 + 60) / 2
    assert q.longest_wait_s == 35.0
    assert q.avg_time_to_abandon_s == 16.5
    assert (q.ewt.predictions, q.ewt.mae_s, q.ewt.bias_s, q.ewt.p90_coverage) == (3, 5.667, -4.333, 0.6667)
    assert kpis.queues["vip"].service_level == 1.0
    total = kpis.total
    assert (total.offered, total.answered) == (6, 3)
    assert total.service_level == 0.5  # 2 / (3 + 2 - 1)
    assert total.asa_s == pytest.approx(49 / 3, abs=1e-3)
    assert kpis.agents["100"].handle_s == 130 and kpis.agents["100"].available_s == 70
    assert kpis.agents["100"].occupancy == 0.65
    assert kpis.agents["101"].handle_s == 60 and kpis.agents["101"].available_s == 240
    assert kpis.occupancy == 0.38  # 190 / (190 + 310)
    as_dict = kpis.to_dict()
    assert as_dict["formulas"]["service_level"].startswith("answered_within_T")


def test_window_and_thresholds_rederive() -> None:
    start = T0.timestamp()
    kpis = compute_kpis(LOG, sl_threshold_s=40, short_abandon_s=0, since=start + 15, until=start + 400)
    q = kpis.queues["q"]
    assert (q.offered, q.answered, q.abandoned, q.short_abandons, q.other_exits) == (2, 1, 1, 0, 1)
    assert q.service_level == 0.5  # c2 within 40 s; c4 abandoned: 1 / (1 + 1)
    assert q.longest_wait_s == 300.0
    # occupancy clipped to [15, 400): agent 100 handles 15-140 and is available 140-200
    assert kpis.agents["100"].handle_s == 125 and kpis.agents["100"].available_s == 60


def test_empty_log() -> None:
    kpis = compute_kpis([], sl_threshold_s=20, short_abandon_s=5)
    assert kpis.total.service_level is None and kpis.occupancy is None and kpis.queues == {}


def test_engine_events_feed_the_kpis() -> None:
    """The engine's own events carry what the KPIs need (waits, durations, agent states)."""
    world = World({"q": QueueConfig(wrapup_s=5)})
    world.agent("100")
    world.call("c1")
    world.advance(4)
    world.result(world.route()[0], "answered")
    world.advance(60)
    world.end("100")
    world.advance(5)
    world.call("c2")
    world.presence("100", "not_ready", "break")
    world.advance(2)
    world.leave("c2")
    world.advance(13)
    kpis = compute_kpis(world.log, sl_threshold_s=20, short_abandon_s=5, until=world.now)
    q = kpis.queues["q"]
    assert (q.offered, q.answered, q.abandoned, q.short_abandons) == (2, 1, 1, 1)
    assert q.aht_s == 65.0 and q.asa_s == 4.0 and q.service_level == 1.0
    # handling 4-69 (talk 60 + wrap-up 5), available 0-4, not ready from 69
    assert (kpis.agents["100"].handle_s, kpis.agents["100"].available_s) == (65.0, 4.0)
