"""The event bus that feeds the store, the metrics and the live views."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import CollectorRegistry

from helpline.events import DomainEvent, EventBus
from helpline.events.metrics import MetricsSink


def test_every_sink_gets_every_event_and_a_failing_one_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    first: list[DomainEvent] = []
    last: list[str] = []

    def broken(event: DomainEvent) -> None:
        raise RuntimeError("disk on fire")

    bus.subscribe(first.append)
    bus.subscribe(broken)
    bus.subscribe(lambda e: last.append(e.type))
    with caplog.at_level(logging.ERROR, logger="helpline.events.bus"):
        bus.publish(DomainEvent.now("call.offered", "a" * 32, {"trunk": "t"}))
        bus.publish(DomainEvent.now("ivr.node_entered", "a" * 32, node_id="n1"))
    assert [e.type for e in first] == ["call.offered", "ivr.node_entered"]
    assert last == ["call.offered", "ivr.node_entered"]
    assert bus.sink_errors == 2
    records = [r for r in caplog.records if "sink" in r.getMessage()]
    assert [(r.event_type, r.call_id) for r in records] == [  # type: ignore[attr-defined]
        ("call.offered", "a" * 32),
        ("ivr.node_entered", "a" * 32),
    ]
    assert all(r.exc_info and "disk on fire" in str(r.exc_info[1]) for r in records)


def test_event_data_is_frozen_at_publish() -> None:
    data = {"digit": "1"}
    event = DomainEvent.now("dtmf.received", "a" * 32, data)
    data["digit"] = "9"
    assert event.data["digit"] == "1" and event.at.tzinfo is not None
    with pytest.raises(TypeError):
        event.data["digit"] = "2"  # type: ignore[index]


async def test_live_subscription_sees_events_published_before_it_first_iterates() -> None:
    bus = EventBus()
    async with bus.live() as events:
        bus.publish(DomainEvent.now("call.offered", "a" * 32))
        bus.publish(DomainEvent.now("call.ended", "a" * 32))
        async with asyncio.timeout(5):
            got = [await anext(events), await anext(events)]
    assert [e.type for e in got] == ["call.offered", "call.ended"]
    assert bus.live_subscribers == 0


async def test_a_slow_live_consumer_loses_its_oldest_events_and_they_are_counted() -> None:
    bus = EventBus()
    slow = bus.live(maxsize=3)
    fast = bus.live(maxsize=100)
    for i in range(10):
        bus.publish(DomainEvent.now(f"ivr.step{i}", "a" * 32))
    slow.close()  # iteration ends once what is buffered has been read
    async with asyncio.timeout(5):
        kept = [e.type async for e in slow]
        fast_got = [await anext(fast) for _ in range(10)]
    assert kept == ["ivr.step7", "ivr.step8", "ivr.step9"]
    assert slow.dropped == 7 and fast.dropped == 0 and bus.live_dropped == 7
    assert [e.type for e in fast_got] == [f"ivr.step{i}" for i in range(10)]
    fast.close()


async def test_a_waiting_live_consumer_is_woken_by_publish() -> None:
    bus = EventBus()
    events = bus.live()

    async def consume() -> str:
        return (await anext(events)).type

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.01)
    assert not task.done()
    bus.publish(DomainEvent.now("call.answered", "a" * 32))
    async with asyncio.timeout(5):
        assert await task == "call.answered"
    events.close()


def test_metric_labels_stay_bounded() -> None:
    registry = CollectorRegistry()
    metrics = MetricsSink(registry, max_label_values=3)
    for i in range(10):
        metrics(DomainEvent.now("call.offered", f"{i:032x}", {"trunk": f"trunk{i}"}))
        metrics(DomainEvent.now("call.ended", f"{i:032x}", {"disposition": "weird" if i else "completed"}))
    metrics(DomainEvent.now("dtmf.received", None, {"source": "+15551234567"}))
    labels = {
        (s.labels.get("trunk"), s.labels.get("disposition"))
        for f in registry.collect() if f.name == "helpline_calls"
        for s in f.samples if s.name == "helpline_calls_total"
    }  # fmt: skip
    assert {t for t, _ in labels} == {"trunk0", "trunk1", "trunk2", "other"}
    assert {d for _, d in labels} == {"completed", "other"}
    assert registry.get_sample_value("helpline_dtmf_total", {"source": "other"}) == 1
    assert registry.get_sample_value("helpline_calls_active") == 0
