"""Schema migrations, run programmatically (no alembic.ini lookup from the working directory).

``upgrade`` is awaited at server start; ``upgrade_sync`` is what ``helpline db upgrade`` calls.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from helpline.store.engine import async_url, sqlite_path

logger = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent


def alembic_config(url: str | URL) -> Config:
    """Alembic config bound to Helpline's migration scripts and to ``url``."""
    config = Config(str(_HERE / "alembic.ini"))
    config.set_main_option("script_location", str(_HERE / "migrations"))
    config.attributes["database_url"] = async_url(url).render_as_string(hide_password=False)
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    if head is None:
        raise RuntimeError("no migration scripts found")
    return head


def upgrade_sync(url: str | URL, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision``. Blocking; must not run on an event loop
    thread (the migration environment runs its own loop)."""
    path = sqlite_path(url)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    logger.info("migrating database", extra={"db": async_url(url).render_as_string(), "to": revision})
    command.upgrade(alembic_config(url), revision)


async def upgrade(url: str | URL, revision: str = "head") -> None:
    """Run the migrations in a worker thread so the server's loop keeps running."""
    await asyncio.to_thread(upgrade_sync, url, revision)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at (None before the first migration)."""
    async with engine.connect() as connection:
        return await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
