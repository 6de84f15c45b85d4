"""Async engine creation: one place that knows which driver and which connection settings to use."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}
SQLITE_BUSY_TIMEOUT_MS = 5000


def async_url(url: str | URL) -> URL:
    """Map plain ``sqlite:///`` and ``postgresql://`` URLs to the async drivers we ship with."""
    parsed = make_url(url) if isinstance(url, str) else url
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    return parsed.set(drivername=driver) if driver else parsed


def sqlite_path(url: str | URL) -> str | None:
    """The file a SQLite URL points at, or None for other databases and in-memory SQLite."""
    parsed = async_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return parsed.database


def create_engine(
    url: str | URL, *, sqlite_busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS, **kwargs: Any
) -> AsyncEngine:
    """An async engine; SQLite connections get WAL, foreign keys and a busy timeout (how long a
    writer waits for another one's lock before failing with "database is locked")."""
    parsed = async_url(url)
    if parsed.get_backend_name() == "sqlite":
        kwargs.setdefault("connect_args", {}).setdefault("timeout", sqlite_busy_timeout_ms / 1000)
        engine = create_async_engine(parsed, **kwargs)

        def on_connect(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.execute(f"PRAGMA busy_timeout={int(sqlite_busy_timeout_ms)}")
                cursor.execute("PRAGMA synchronous=NORMAL")
            finally:
                cursor.close()

        event.listen(engine.sync_engine, "connect", on_connect)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(parsed, **kwargs)
