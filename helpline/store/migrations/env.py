"""Alembic environment: runs the migrations on the async engine Helpline itself uses."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from helpline.store.engine import async_url, create_engine
from helpline.store.models import Base

config = context.config
_configured_url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
if not _configured_url:
    raise RuntimeError("no database URL: pass it as config.attributes['database_url']")
url: str = str(_configured_url)
# SQLite cannot ALTER most things in place; batch mode rebuilds the table instead.
is_sqlite = async_url(url).get_backend_name() == "sqlite"


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=is_sqlite)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=async_url(url), target_metadata=Base.metadata, render_as_batch=is_sqlite, literal_binds=True
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
