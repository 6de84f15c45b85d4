"""``store.bans`` on a real SQLite file and a real PostgreSQL server: writing the guard's changes,
lifting, the active set and the change poll another process relies on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Literal

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from helpline.ban_sync import BanSync
from helpline.sbc_bridge.guard import EdgeGuard, SecuritySettings
from helpline.sbc_bridge.guard.bans import Ban, BanChange
from helpline.store import Store
from helpline.store.bans import BanRepository
from helpline.store.models import Base

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


class StepClock:
    """A wall clock the test moves by hand, so expiry and ``updated_at`` are exact."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def ban(key: str, *, kind: Literal["source", "user"] = "source",
        until: datetime | None = T0 + timedelta(minutes=15), reason: str = "auth_failures") -> BanChange:
    return BanChange("banned", Ban(key, kind, reason, T0, until))


async def test_the_migration_creates_bans_with_its_indexes(migrated_store: Store) -> None:
    async with migrated_store.engine.connect() as conn:
        columns = await conn.run_sync(lambda s: {c["name"]: c for c in inspect(s).get_columns("bans")})
        indexes = await conn.run_sync(lambda s: {i["name"] for i in inspect(s).get_indexes("bans")})
        diff = await conn.run_sync(lambda s: compare_metadata(MigrationContext.configure(s), Base.metadata))
    assert set(columns) == {"key", "kind", "reason", "since", "until", "lifted_at", "lifted_by", "updated_at"}
    assert columns["until"]["nullable"] and not columns["since"]["nullable"]
    assert {"ix_bans_updated_at", "ix_bans_lifted_at_until"} <= indexes
    assert diff == []


async def test_a_ban_is_active_until_it_runs_out(migrated_store: Store) -> None:
    clock = StepClock()
    bans = BanRepository(migrated_store.sessions, clock)
    written = await bans.upsert(ban("192.0.2.7"))
    assert written is not None and written.key == "192.0.2.7" and written.kind == "source"
    assert written.since == T0 and written.until == T0 + timedelta(minutes=15)
    await bans.upsert(ban("1001", kind="user", until=None, reason="user_auth_failures"))
    assert [b.key for b in await bans.active()] == ["1001", "192.0.2.7"]  # same since: by key
    clock.advance(15 * 60)  # until is exclusive: at `until` the ban is over
    assert [b.key for b in await bans.active()] == ["1001"]
    assert [b.key for b in await bans.list()] == ["1001"]
    assert {b.key for b in await bans.list(all=True)} == {"192.0.2.7", "1001"}


async def test_lift_ends_an_active_ban_once(migrated_store: Store) -> None:
    clock = StepClock()
    bans = BanRepository(migrated_store.sessions, clock)
    await bans.upsert(ban("192.0.2.7"))
    clock.advance(5)
    assert await bans.lift("192.0.2.7", "cli:root") is True
    assert await bans.lift("192.0.2.7", "cli:root") is False  # nothing active any more
    assert await bans.lift("198.51.100.1", "cli:root") is False  # never banned
    row = await bans.get("192.0.2.7")
    assert row is not None and row.lifted_at == clock.now and row.lifted_by == "cli:root"
    assert row.updated_at == clock.now and not row.active_at(clock.now)
    assert await bans.active() == []
    # an expired ban cannot be lifted either
    await bans.upsert(ban("198.51.100.2", until=clock.now + timedelta(seconds=1)))
    clock.advance(2)
    assert await bans.lift("198.51.100.2", "admin") is False


async def test_writes_that_change_nothing_leave_updated_at_alone(migrated_store: Store) -> None:
    clock = StepClock()
    bans = BanRepository(migrated_store.sessions, clock)
    first = await bans.upsert(ban("192.0.2.7"))
    clock.advance(1)
    assert await bans.upsert(ban("192.0.2.7")) is None  # the same ban again (a restore's echo)
    clock.advance(1)
    assert await bans.lift("192.0.2.7", "admin")
    clock.advance(1)
    # the guard's own "lifted" after applying the lift: the row already says so
    echo = BanChange("lifted", Ban("192.0.2.7", "source", "auth_failures", T0, None), "x")
    assert await bans.upsert(echo) is None
    row = await bans.get("192.0.2.7")
    assert first is not None and row is not None and row.lifted_by == "admin"
    assert row.updated_at == T0 + timedelta(seconds=2)
    # the guard's lift or expiry of something the store never had: nothing to write
    gone = BanChange("expired", Ban("203.0.113.9", "source", "flood", T0, T0), "expiry")
    assert await bans.upsert(gone) is None


async def test_a_renewed_ban_replaces_a_lifted_one(migrated_store: Store) -> None:
    clock = StepClock()
    bans = BanRepository(migrated_store.sessions, clock)
    await bans.upsert(ban("192.0.2.7"))
    await bans.lift("192.0.2.7", "admin")
    clock.advance(60)
    renewed = Ban("192.0.2.7", "source", "flood", clock.now, clock.now + timedelta(hours=1))
    row = await bans.upsert(BanChange("banned", renewed))
    assert row is not None and row.reason == "flood" and row.lifted_at is None and row.lifted_by is None
    assert [b.key for b in await bans.active()] == ["192.0.2.7"]
    assert len(await bans.list(all=True)) == 1


async def test_expiry_marks_the_row_lifted_by_expiry(migrated_store: Store) -> None:
    clock = StepClock()
    bans = BanRepository(migrated_store.sessions, clock)
    await bans.upsert(ban("192.0.2.7"))
    clock.advance(900)
    expired = Ban("192.0.2.7", "source", "auth_failures", T0, clock.now)
    row = await bans.upsert(BanChange("expired", expired, "expiry"))
    assert row is not None and row.lifted_by == "expiry" and row.lifted_at == clock.now


async def test_changed_since_sees_every_write_after_the_last_poll(migrated_store: Store) -> None:
    clock = StepClock()
    bans = BanRepository(migrated_store.sessions, clock)
    await bans.upsert(ban("192.0.2.7"))
    first = await bans.changed_since(None)
    assert [b.key for b in first.changed] == ["192.0.2.7"]
    assert first.as_of == T0 - timedelta(seconds=2)  # slack for transactions still committing
    clock.advance(10)
    quiet = await bans.changed_since(clock.now - timedelta(seconds=2))
    assert quiet.changed == []
    since = quiet.as_of
    clock.advance(1)
    assert await bans.lift("192.0.2.7", "cli:ops")
    await bans.upsert(ban("198.51.100.4"))
    later = await bans.changed_since(since)
    assert [(b.key, b.lifted_by) for b in later.changed] == [("192.0.2.7", "cli:ops"), ("198.51.100.4", None)]


async def test_store_exposes_the_repository(migrated_store: Store) -> None:
    await migrated_store.bans.upsert(BanChange("banned", Ban("192.0.2.9", "source", "flood", T0, None)))
    (active,) = await migrated_store.bans.active()
    assert active.as_ban() == Ban("192.0.2.9", "source", "flood", T0, None)


async def wait_until(condition: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Poll ``condition`` (the service polls the table once a second) until it holds."""
    async with asyncio.timeout(timeout):
        while True:
            if await condition():
                return
            await asyncio.sleep(0.05)


def new_guard() -> EdgeGuard:
    return EdgeGuard(SecuritySettings(), on_event=lambda _type, _data: None)


async def test_the_service_keeps_its_guard_and_the_table_in_step(migrated_store: Store) -> None:
    """BanSync (helpline.ban_sync) with a real guard: bans are stored, lifts made in the table reach the
    guard through the poll, a lift never ends a newer ban, and a restart restores what is active."""
    guard = new_guard()
    sync = BanSync(guard, migrated_store.bans)
    guard.on_ban_change = sync.on_change
    await sync.start()
    try:
        guard.bans.ban("192.0.2.7", "source", "auth_failures", 900)
        guard.bans.ban("1001", "user", "user_auth_failures", 900)

        async def stored() -> bool:
            return {b.key for b in await migrated_store.bans.active()} == {"192.0.2.7", "1001"}

        await wait_until(stored)
        assert await migrated_store.bans.lift("192.0.2.7", "cli:ops")  # as another process would

        async def lifted_in_guard() -> bool:
            return guard.bans.check("192.0.2.7") is None

        await wait_until(lifted_in_guard)
        assert guard.user_locked("1001")
        row = await migrated_store.bans.get("192.0.2.7")
        assert row is not None and row.lifted_by == "cli:ops"  # the guard's echo changed nothing

        # the guard bans the source again before it sees an old lift: the old row must not lift it
        old = await migrated_store.bans.get("192.0.2.7")
        newer = guard.bans.ban("192.0.2.7", "source", "flood", 900)
        assert old is not None and newer.since > old.since
        sync.apply(old, datetime.now(UTC))
        assert guard.bans.check("192.0.2.7") == newer

        # a ban another node wrote appears in this guard
        elsewhere = Ban("198.51.100.9", "source", "flood", datetime.now(UTC), None, "guard")
        await migrated_store.bans.upsert(BanChange("banned", elsewhere))

        async def joined() -> bool:
            return guard.bans.check("198.51.100.9") is not None

        await wait_until(joined)
    finally:
        await sync.close()

    restarted = new_guard()
    again = BanSync(restarted, migrated_store.bans)
    restarted.on_ban_change = again.on_change
    await again.start()
    try:
        assert {b.key for b in restarted.bans.list()} == {"192.0.2.7", "1001", "198.51.100.9"}
        assert restarted.bans.check("192.0.2.7") == newer
    finally:
        await again.close()
