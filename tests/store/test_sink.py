"""StoreSink: CDR building, per-call order, batching, shutdown flush, retries. Real databases."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from sqlalchemy import func, select

from helpline.events import DomainEvent, EventBus
from helpline.store import Store, StoreSink, upgrade
from helpline.store.engine import create_engine
from helpline.store.models import CallEvent, SecurityEvent

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def ev(
    type: str, call_id: str | None, at_s: float = 0.0, node_id: str | None = None, **data: Any
) -> DomainEvent:
    return DomainEvent(
        type=type, call_id=call_id, data=data, at=T0 + timedelta(seconds=at_s), node_id=node_id
    )


OFFERED = dict(
    sip_call_id="abc@10.0.0.1", trunk="carrier-a", caller="+441632960001", caller_name="Alice",
    did="+441632960999", pai="<sip:+441632960001@carrier>", verstat="TN-Validation-Passed",
    source="192.0.2.10:5060", transport="udp",
)  # fmt: skip


async def wait_until(predicate: Any) -> None:
    """Poll the database (it has no change notification) for up to 10 s."""
    async with asyncio.timeout(10):
        while not await predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


@pytest.fixture
async def bus_and_sink(migrated_store: Store) -> AsyncIterator[tuple[EventBus, StoreSink]]:
    bus = EventBus()
    sink = StoreSink(migrated_store)
    sink.start()
    bus.subscribe(sink)
    yield bus, sink
    await sink.aclose(give_up_after=10)


async def test_call_lifecycle_builds_the_cdr_and_the_event_log(
    migrated_store: Store, bus_and_sink: tuple[EventBus, StoreSink]
) -> None:
    bus, sink = bus_and_sink
    cid = "a" * 32
    bus.publish(ev("call.offered", cid, 0, **OFFERED))
    bus.publish(ev("call.answered", cid, 1.5, codec="PCMU", flow_id="main", flow_version="7"))
    bus.publish(ev("ivr.flow_started", cid, 1.6, flow="main", version="7"))
    bus.publish(ev("ivr.node_entered", cid, 1.7, node_id="welcome", node_type="play"))
    bus.publish(ev("dtmf.received", cid, 3.0, digit="1", source="rtp"))
    bus.publish(ev("call.ended", cid, 9.0, disposition="completed", sip_code=200, reason="bye", by="caller"))
    await sink.flush()

    call = await migrated_store.calls.get_call(cid)
    assert call is not None
    assert (call.sip_call_id, call.trunk, call.caller, call.caller_name, call.did) == (
        "abc@10.0.0.1", "carrier-a", "+441632960001", "Alice", "+441632960999",
    )  # fmt: skip
    assert (call.pai, call.verstat, call.source, call.transport) == (
        OFFERED["pai"], "TN-Validation-Passed", "192.0.2.10:5060", "udp",
    )  # fmt: skip
    assert (call.codec, call.flow_id, call.flow_version) == ("PCMU", "main", "7")
    assert (call.disposition, call.sip_code, call.end_reason) == ("completed", 200, "bye")
    assert call.started_at == T0
    assert call.answered_at == T0 + timedelta(seconds=1.5)
    assert call.ended_at == T0 + timedelta(seconds=9)
    assert call.started_at.tzinfo == UTC
    assert [(e.seq, e.type) for e in call.events] == [
        (1, "call.offered"), (2, "call.answered"), (3, "ivr.flow_started"),
        (4, "ivr.node_entered"), (5, "dtmf.received"), (6, "call.ended"),
    ]  # fmt: skip
    assert call.events[3].node_id == "welcome"
    assert call.events[4].data == {"digit": "1", "source": "rtp"}
    assert sink.written == 6 and sink.failed == 0 and sink.dropped == 0


async def test_refused_call_and_security_event(
    migrated_store: Store, bus_and_sink: tuple[EventBus, StoreSink]
) -> None:
    bus, sink = bus_and_sink
    cid = "b" * 32
    bus.publish(ev("call.offered", cid, 0, **OFFERED))
    bus.publish(ev("call.refused", cid, 0.01, sip_code=403, reason="blocked country +44"))
    bus.publish(ev("security.blocked_country", None, 0.01, source=("192.0.2.10", 5060), transport="udp",
                   prefix="+44"))  # fmt: skip
    bus.publish(ev("system.started", None, 0.02))  # neither a call nor a security event: not stored
    await sink.flush()

    call = await migrated_store.calls.get_call(cid)
    assert call is not None
    assert (call.disposition, call.sip_code, call.end_reason) == ("refused", 403, "blocked country +44")
    assert call.ended_at == T0 + timedelta(seconds=0.01) and call.answered_at is None
    page = await migrated_store.calls.list_security_events()
    assert [(s.type, s.source, s.transport, s.data["prefix"]) for s in page.items] == [
        ("security.blocked_country", "192.0.2.10:5060", "udp", "+44")
    ]


async def test_interleaved_calls_keep_their_order_across_size_triggered_batches(
    migrated_store: Store,
) -> None:
    sink = StoreSink(migrated_store, batch_size=7, flush_interval=30.0)  # only size triggers a write
    sink.start()
    calls = [f"{i:032x}" for i in range(3)]
    published: dict[str, list[str]] = {c: [] for c in calls}
    for c in calls:
        sink(ev("call.offered", c, 0, **OFFERED))
        published[c].append("call.offered")
    for n in range(60):
        c = calls[n % 3]
        sink(ev(f"ivr.step{n}", c, n * 0.001))
        published[c].append(f"ivr.step{n}")
    total = 63
    await wait_until(lambda: _count_events(migrated_store, total))
    assert sink.batches == total // 7  # nine full batches, no timer flush
    for c in calls:
        detail = await migrated_store.calls.get_call(c)
        assert detail is not None
        assert [e.type for e in detail.events] == published[c]
        assert [e.seq for e in detail.events] == list(range(1, len(published[c]) + 1))
    await sink.aclose()


async def _count_events(store: Store, expected: int) -> bool:
    async with store.sessions() as session:
        return (await session.scalar(select(func.count()).select_from(CallEvent))) == expected


async def test_a_lone_event_is_written_by_the_timer(migrated_store: Store) -> None:
    sink = StoreSink(migrated_store, batch_size=1000, flush_interval=0.05)
    sink.start()
    sink(ev("call.offered", "c" * 32, 0, **OFFERED))
    await wait_until(lambda: _count_events(migrated_store, 1))
    assert sink.batches == 1
    await sink.aclose()


async def test_flush_does_not_wait_for_the_timer(migrated_store: Store) -> None:
    sink = StoreSink(migrated_store, batch_size=5, flush_interval=600)
    sink.start()
    for i in range(12):  # more than two batches: the last, short one is flushed too
        sink(ev("security.malformed", None, i))
    async with asyncio.timeout(10):  # far below the interval: flush() itself triggered the writes
        await sink.flush()
    assert sink.written == 12 and sink.batches == 3
    sink(ev("security.malformed", None, 13))
    await asyncio.sleep(0)  # the writer is now waiting out its interval
    async with asyncio.timeout(10):
        await sink.flush()
    assert sink.written == 13
    await sink.aclose()


async def test_seq_continues_after_a_restart(migrated_store: Store) -> None:
    cid = "d" * 32
    first = StoreSink(migrated_store)
    first.start()
    first(ev("call.offered", cid, 0, **OFFERED))
    first(ev("ivr.node_entered", cid, 1))
    await first.aclose()
    second = StoreSink(migrated_store)
    second.start()
    second(ev("call.ended", cid, 2, disposition="abandoned"))
    await second.aclose()
    detail = await migrated_store.calls.get_call(cid)
    assert detail is not None
    assert [(e.seq, e.type) for e in detail.events] == [(1, "call.offered"), (2, "ivr.node_entered"),
                                                        (3, "call.ended")]  # fmt: skip
    assert detail.disposition == "abandoned"


async def test_aclose_flushes_everything_queued(db_url: str) -> None:
    await upgrade(db_url)
    store = Store(db_url)
    sink = StoreSink(store, batch_size=50, flush_interval=10.0)
    sink.start()
    for i in range(40):
        cid = f"{i:032x}"
        sink(ev("call.offered", cid, i, **OFFERED))
        sink(ev("call.ended", cid, i + 1, disposition="completed", sip_code=200))
        sink(ev("security.malformed", None, i, source="198.51.100.7:5060", transport="tcp"))
    await sink.aclose()  # no flush() before: the long timer would not have fired yet
    await store.close()

    reopened = Store(db_url)  # a fresh engine sees what was committed
    try:
        page = await reopened.calls.list_calls(limit=500)
        assert len(page.items) == 40 and all(c.disposition == "completed" for c in page.items)
        async with reopened.sessions() as session:
            assert await session.scalar(select(func.count()).select_from(CallEvent)) == 80
            assert await session.scalar(select(func.count()).select_from(SecurityEvent)) == 40
    finally:
        await reopened.close()
    sink(ev("call.offered", "e" * 32, 0))  # after close: refused loudly, counted
    assert sink.dropped == 1


async def test_events_for_an_unknown_call_still_get_a_cdr(
    migrated_store: Store, bus_and_sink: tuple[EventBus, StoreSink], caplog: pytest.LogCaptureFixture
) -> None:
    bus, sink = bus_and_sink
    bus.publish(ev("ivr.node_entered", "f" * 32, 5, node_id="menu"))
    await sink.flush()
    call = await migrated_store.calls.get_call("f" * 32)
    assert call is not None and call.started_at == T0 + timedelta(seconds=5)
    assert "never offered" in caplog.text


async def test_a_bad_event_is_isolated_logged_and_counted(
    migrated_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    sink = StoreSink(migrated_store, retry_initial=0.01, attempts_before_split=2, flush_interval=10)
    sink.start()
    cid = "1" * 32
    sink(ev("call.offered", cid, 0, **OFFERED))
    # A producer bug: a naive timestamp cannot be stored as UTC.
    sink(DomainEvent("ivr.node_entered", cid, {}, datetime(2025, 3, 1, 12, 0, 1)))
    sink(ev("call.ended", cid, 2, disposition="completed", sip_code=200))
    with caplog.at_level(logging.ERROR, logger="helpline.store.sink"):
        await sink.aclose(give_up_after=20)
    assert sink.failed == 1 and sink.written == 2
    assert "giving up" in caplog.text
    detail = await migrated_store.calls.get_call(cid)
    assert detail is not None
    assert [e.type for e in detail.events] == ["call.offered", "call.ended"]
    assert detail.disposition == "completed"


@pytest.fixture
def sqlite_locker(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    yield conn
    conn.close()


async def test_database_errors_are_retried_until_the_database_is_back(
    tmp_path: Path, sqlite_locker: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'locked.db'}"
    await upgrade(url)
    store = Store(create_engine(url, sqlite_busy_timeout_ms=20))
    sink = StoreSink(store, retry_initial=0.02, retry_max=0.05, attempts_before_split=1)
    sink.start()
    sqlite_locker.execute("BEGIN EXCLUSIVE")  # another writer holds the database
    try:
        with caplog.at_level(logging.ERROR, logger="helpline.store.sink"):
            sink(ev("call.offered", "2" * 32, 0, **OFFERED))
            async with asyncio.timeout(10):
                while sink.db_errors < 3:  # noqa: ASYNC110 (a counter has nothing to wait on)
                    await asyncio.sleep(0.01)
        assert sink.written == 0
        assert "store write failed; retrying" in caplog.text
    finally:
        sqlite_locker.execute("ROLLBACK")
    await sink.flush()
    assert sink.written == 1 and sink.failed == 0  # a locked database is not a reason to drop
    assert await store.calls.get_call("2" * 32) is not None
    await sink.aclose()
    await store.close()


async def test_a_full_queue_drops_and_counts(migrated_store: Store, caplog: pytest.LogCaptureFixture) -> None:
    sink = StoreSink(migrated_store, max_pending=5)  # not started: nothing drains the queue
    for i in range(8):
        sink(ev("security.malformed", None, i))
    assert sink.pending == 5 and sink.dropped == 3
    assert "queue is full" in caplog.text
    sink.start()
    await sink.aclose()
    page = await migrated_store.calls.list_security_events()
    assert len(page.items) == 5


async def _events_of(store: Store, call_id: str) -> list[tuple[int, str]]:
    detail = await store.calls.get_call(call_id)
    assert detail is not None
    return [(e.seq, e.type) for e in detail.events]


async def test_one_batch_mixing_new_and_stored_calls_sets_each_cdr(migrated_store: Store) -> None:
    a, b, c, d = (f"{n}" * 32 for n in "abcd")
    sink = StoreSink(migrated_store, flush_interval=30)
    sink.start()
    for cid in (a, b, c):
        sink(ev("call.offered", cid, 0, **OFFERED))
    await sink.flush()
    # One batch: stored calls changing different column sets, and a new call offered and refused.
    sink(ev("call.answered", a, 1, codec="PCMA", flow_id="main", flow_version="3"))
    sink(ev("call.ended", b, 2, disposition="abandoned", sip_code=487, reason="cancel"))
    sink(ev("call.offered", d, 2.5, **{**OFFERED, "caller": "+15550100", "caller_name": None}))
    sink(ev("call.answered", c, 3, codec="PCMU"))
    sink(ev("call.refused", d, 2.6, sip_code=403, reason="blocked"))
    sink(ev("call.ended", c, 4, disposition="completed", sip_code=9999, reason="bye"))  # not a SIP code
    await sink.flush()
    assert sink.batches == 2
    ca, cb, cc, cd = [await migrated_store.calls.get_call(cid) for cid in (a, b, c, d)]
    assert ca is not None and cb is not None and cc is not None and cd is not None
    assert (ca.codec, ca.flow_id, ca.flow_version, ca.disposition) == ("PCMA", "main", "3", "answered")
    assert ca.answered_at == T0 + timedelta(seconds=1) and ca.ended_at is None
    assert (cb.disposition, cb.sip_code, cb.end_reason, cb.answered_at) == ("abandoned", 487, "cancel", None)
    assert (cc.codec, cc.flow_id, cc.disposition, cc.sip_code) == ("PCMU", None, "completed", None)
    assert cc.ended_at == T0 + timedelta(seconds=4)
    assert (cd.caller, cd.caller_name, cd.trunk, cd.disposition, cd.sip_code) == (
        "+15550100", None, "carrier-a", "refused", 403,
    )  # fmt: skip
    assert cd.started_at == T0 + timedelta(seconds=2.5)
    assert (ca.caller, cb.caller, cc.caller) == (OFFERED["caller"],) * 3  # updates left the rest alone
    assert await _events_of(migrated_store, c) == [(1, "call.offered"), (2, "call.answered"),
                                                   (3, "call.ended")]  # fmt: skip
    await sink.aclose()


async def test_events_after_a_call_ended_or_evicted_from_memory_keep_counting(migrated_store: Store) -> None:
    ended, open_ = "e" * 32, [f"{i:032x}" for i in range(4)]
    sink = StoreSink(migrated_store, max_tracked_calls=2)  # fewer than the open calls
    sink.start()
    sink(ev("call.offered", ended, 0, **OFFERED))
    sink(ev("call.ended", ended, 1, disposition="completed", sip_code=200))
    for cid in open_:
        sink(ev("call.offered", cid, 0, **OFFERED))
    await sink.flush()
    sink(ev("ivr.error", ended, 2, message="late"))  # a straggler after call.ended
    for cid in open_:
        sink(ev("ivr.node_entered", cid, 1, node_id="menu"))
        sink(ev("call.ended", cid, 2, disposition="completed", sip_code=200))
    await sink.flush()
    assert await _events_of(migrated_store, ended) == [(1, "call.offered"), (2, "call.ended"),
                                                       (3, "ivr.error")]  # fmt: skip
    for cid in open_:
        assert await _events_of(migrated_store, cid) == [(1, "call.offered"), (2, "ivr.node_entered"),
                                                         (3, "call.ended")]  # fmt: skip
    assert sink.failed == 0 and sink.db_errors == 0
    await sink.aclose()


async def test_a_repeated_call_offered_is_merged_into_the_stored_cdr(
    migrated_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A producer that offers the same call twice (or a process that restarts mid-call and does) does
    not lose events: the retry looks the call up and updates its CDR instead of inserting it."""
    cid = "9" * 32
    first = StoreSink(migrated_store)
    first.start()
    first(ev("call.offered", cid, 0, **OFFERED))
    await first.aclose()
    second = StoreSink(migrated_store, retry_initial=0.01)
    second.start()
    with caplog.at_level(logging.ERROR, logger="helpline.store.sink"):
        second(ev("call.offered", cid, 5, **{**OFFERED, "trunk": "carrier-b"}))
        second(ev("call.ended", cid, 6, disposition="completed", sip_code=200))
        await second.aclose(give_up_after=10)
    assert second.failed == 0 and second.written == 2 and second.db_errors == 1
    assert "store write failed; retrying" in caplog.text
    detail = await migrated_store.calls.get_call(cid)
    assert detail is not None
    assert (detail.trunk, detail.started_at, detail.disposition) == ("carrier-b", T0 + timedelta(seconds=5),
                                                                     "completed")  # fmt: skip
    assert [(e.seq, e.type) for e in detail.events] == [(1, "call.offered"), (2, "call.offered"),
                                                        (3, "call.ended")]  # fmt: skip


class Colour(StrEnum):
    RED = "red"


class Opaque:
    def __str__(self) -> str:
        return "opaque!"


async def test_event_data_is_stored_as_plain_json(
    migrated_store: Store, bus_and_sink: tuple[EventBus, StoreSink]
) -> None:
    bus, sink = bus_and_sink
    cid = "7" * 32
    at = datetime(2025, 3, 1, 12, 0, 1, 500000, tzinfo=UTC)
    plain = {"digits": ["1", "2"], "n": 3, "ok": True, "none": None, "ratio": 0.5,
             "nested": {"a": [{"b": 1}]}}  # fmt: skip
    bus.publish(ev("call.offered", cid, 0, **OFFERED))
    bus.publish(ev("ivr.variable_set", cid, 1, **plain))
    bus.publish(ev(
        "ivr.http", cid, 2, source=("192.0.2.1", 80), when=at, headers=MappingProxyType({"x": (1, 2)}),
        tags={"only"}, colour=Colour.RED, nan=float("nan"), inf=float("-inf"), obj=Opaque(),
        keys={2: "two", None: "none", False: "no"},
    ))  # fmt: skip
    await sink.flush()
    detail = await migrated_store.calls.get_call(cid)
    assert detail is not None and sink.failed == 0
    assert detail.events[1].data == plain
    assert detail.events[2].data == {
        "source": ["192.0.2.1", 80], "when": "2025-03-01T12:00:01.500000+00:00", "headers": {"x": [1, 2]},
        "tags": ["only"], "colour": "red", "nan": "nan", "inf": "-inf", "obj": "opaque!",
        "keys": {"2": "two", "null": "none", "false": "no"},
    }  # fmt: skip


async def test_calls_a_crash_left_open_are_closed_at_the_next_start(
    migrated_store: Store, bus_and_sink: tuple[EventBus, StoreSink]
) -> None:
    """A call whose process died has no ``call.ended``: the next start closes its CDR as failed at its
    last stored event, and leaves finished calls alone."""
    bus, sink = bus_and_sink
    open_id, done_id, ringing_id = "b" * 32, "c" * 32, "d" * 32
    bus.publish(ev("call.offered", open_id, 0, **OFFERED))
    bus.publish(ev("call.answered", open_id, 1, codec="PCMU", flow_id="main", flow_version="7"))
    bus.publish(ev("recording.started", open_id, 4.5, recording_id="r" * 32))
    bus.publish(ev("call.offered", done_id, 0, **OFFERED))
    bus.publish(ev("call.ended", done_id, 2, disposition="cancelled", sip_code=487, reason="cancel",
                   by="cancel"))
    bus.publish(ev("call.offered", ringing_id, 3, **OFFERED))
    await sink.flush()

    assert await migrated_store.calls.close_interrupted() == 2
    closed = await migrated_store.calls.get_call(open_id)
    assert closed is not None
    assert (closed.disposition, closed.ended_at) == ("failed", T0 + timedelta(seconds=4.5))
    assert closed.end_reason is not None and closed.end_reason.startswith("interrupted")
    ringing = await migrated_store.calls.get_call(ringing_id)
    assert ringing is not None and ringing.ended_at == T0 + timedelta(seconds=3)
    done = await migrated_store.calls.get_call(done_id)
    assert done is not None and (done.disposition, done.end_reason) == ("cancelled", "cancel")
    assert await migrated_store.calls.close_interrupted() == 0  # nothing is left open
