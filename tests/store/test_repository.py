"""Read side: filters, newest-first order, cursor and offset paging. Real databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from helpline.events import DomainEvent
from helpline.store import CallFilters, InvalidCursor, SecurityEventFilters, Store, StoreSink

T0 = datetime(2025, 3, 1, 0, 0, tzinfo=UTC)
TRUNKS = ("carrier-a", "carrier-b")
DISPOSITIONS = ("completed", "abandoned", "cancelled")


def call_id(i: int) -> str:
    return f"{i:032x}"


@pytest.fixture
async def twenty_calls(migrated_store: Store) -> Store:
    """Call i starts at T0 + i minutes; attributes cycle so every filter has several matches."""
    sink = StoreSink(migrated_store)
    sink.start()
    for i in range(20):
        at = T0 + timedelta(minutes=i)
        sink(DomainEvent("call.offered", call_id(i), {
            "trunk": TRUNKS[i % 2], "caller": f"+1555000{i % 4:04d}", "did": f"+1800000{i % 5:04d}",
        }, at))  # fmt: skip
        sink(DomainEvent("call.answered", call_id(i), {"flow_id": f"flow{i % 3}"}, at + timedelta(seconds=1)))
        sink(
            DomainEvent(
                "call.ended", call_id(i), {"disposition": DISPOSITIONS[i % 3]}, at + timedelta(seconds=30)
            )
        )
        sink(DomainEvent(f"security.kind{i % 2}", None, {"source": f"192.0.2.{i % 4}:5060"}, at))
    await sink.aclose()
    return migrated_store


async def ids(store: Store, filters: CallFilters, **kw: object) -> list[int]:
    page = await store.calls.list_calls(filters, **kw)  # type: ignore[arg-type]
    return [int(c.id, 16) for c in page.items]


async def test_newest_first_and_each_filter(twenty_calls: Store) -> None:
    store = twenty_calls
    assert await ids(store, CallFilters()) == list(range(19, -1, -1))
    assert await ids(store, CallFilters(trunk="carrier-b")) == [i for i in range(19, -1, -1) if i % 2]
    assert await ids(store, CallFilters(caller="+15550000002")) == [18, 14, 10, 6, 2]
    assert await ids(store, CallFilters(did="+18000000003")) == [18, 13, 8, 3]
    assert await ids(store, CallFilters(disposition="abandoned")) == [19, 16, 13, 10, 7, 4, 1]
    assert await ids(store, CallFilters(flow_id="flow0")) == [18, 15, 12, 9, 6, 3, 0]
    window = CallFilters(since=T0 + timedelta(minutes=5), until=T0 + timedelta(minutes=8))
    assert await ids(store, window) == [7, 6, 5]  # since inclusive, until exclusive
    both = CallFilters(trunk="carrier-a", disposition="completed", since=T0 + timedelta(minutes=3))
    assert await ids(store, both) == [18, 12, 6]
    assert await ids(store, CallFilters(caller="+19999999999")) == []


async def test_cursor_paging_walks_everything_once(twenty_calls: Store) -> None:
    seen: list[int] = []
    cursor = None
    for _ in range(10):
        page = await twenty_calls.calls.list_calls(CallFilters(trunk="carrier-a"), limit=3, cursor=cursor)
        seen += [int(c.id, 16) for c in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == list(range(18, -1, -2))


async def test_offset_paging(twenty_calls: Store) -> None:
    assert await ids(twenty_calls, CallFilters(), limit=4, offset=4) == [15, 14, 13, 12]
    last = await twenty_calls.calls.list_calls(CallFilters(), limit=5, offset=15)
    assert len(last.items) == 5 and last.next_cursor is None


async def test_bad_cursor_and_limits_are_rejected(twenty_calls: Store) -> None:
    with pytest.raises(InvalidCursor):
        await twenty_calls.calls.list_calls(cursor="not-a-cursor")
    security = await twenty_calls.calls.list_security_events(limit=1)
    assert security.next_cursor is not None
    with pytest.raises(InvalidCursor, match="another listing"):
        await twenty_calls.calls.list_calls(cursor=security.next_cursor)
    with pytest.raises(ValueError, match="limit"):
        await twenty_calls.calls.list_calls(limit=501)
    with pytest.raises(ValueError, match="either cursor or offset"):
        await twenty_calls.calls.list_calls(cursor=security.next_cursor, offset=1)


async def test_security_events_filters_and_paging(twenty_calls: Store) -> None:
    repo = twenty_calls.calls
    page = await repo.list_security_events(SecurityEventFilters(type="security.kind1"), limit=4)
    assert [e.at for e in page.items] == [T0 + timedelta(minutes=m) for m in (19, 17, 15, 13)]
    rest = await repo.list_security_events(
        SecurityEventFilters(type="security.kind1"), cursor=page.next_cursor
    )
    assert len(rest.items) == 6 and rest.next_cursor is None
    by_source = await repo.list_security_events(SecurityEventFilters(source="192.0.2.3:5060"))
    assert len(by_source.items) == 5
    window = SecurityEventFilters(since=T0 + timedelta(minutes=18))
    assert len((await repo.list_security_events(window)).items) == 2


async def test_unknown_call_is_none(twenty_calls: Store) -> None:
    assert await twenty_calls.calls.get_call("0" * 31 + "z") is None
