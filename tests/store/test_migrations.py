"""Migrations on a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from helpline.store import Store, current_revision, head_revision, upgrade
from helpline.store.models import Base


async def test_upgrade_creates_the_schema_and_is_idempotent(db_url: str) -> None:
    await upgrade(db_url)
    await upgrade(db_url)  # a restart runs it again: nothing to do, no error
    store = Store(db_url)
    try:
        assert await current_revision(store.engine) == head_revision() == "0004"
        async with store.engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
            assert {"calls", "call_events", "security_events", "alembic_version"} <= tables
            indexes = await conn.run_sync(
                lambda sync: {i["name"] for i in inspect(sync).get_indexes("calls")}
            )
            assert {
                "ix_calls_started_at_id",
                "ix_calls_caller_started_at",
                "ix_calls_did_started_at",
            } <= indexes
    finally:
        await store.close()


async def test_migration_matches_the_models(db_url: str) -> None:
    """The hand-written migration and the ORM models describe the same schema."""
    await upgrade(db_url)
    store = Store(db_url)
    try:
        async with store.engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
        assert diff == []
    finally:
        await store.close()


async def test_sqlite_connections_use_wal_and_foreign_keys(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/sub/dir/h.db"  # missing directories are created by upgrade
    await upgrade(url)
    store = Store(url)
    try:
        async with store.engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
            assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar() == 5000
    finally:
        await store.close()


async def test_plain_urls_map_to_async_drivers(db_url: str) -> None:
    plain = db_url.replace("postgresql+asyncpg://", "postgresql://")
    await upgrade(plain)
    store = Store(plain)
    try:
        assert store.engine.url.drivername in {"sqlite+aiosqlite", "postgresql+asyncpg"}
        await store.ping()
    finally:
        await store.close()
