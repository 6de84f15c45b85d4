"""The store handle the server builds once: engine, sessions and the repositories."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from helpline.store.agents import AgentRepository
from helpline.store.audit import AuditLog
from helpline.store.bans import BanRepository
from helpline.store.engine import create_engine
from helpline.store.queue_history import QueueHistory
from helpline.store.recordings import ConsentRepository, RecordingRepository, RetentionRepository
from helpline.store.repository import CallRepository
from helpline.store.users import SessionRepository, UserRepository


class Store:
    """Owns the async engine: ``Store(url)`` (or an engine you built); ``await store.close()`` last."""

    def __init__(self, url_or_engine: str | URL | AsyncEngine, **engine_kwargs: Any) -> None:
        if isinstance(url_or_engine, AsyncEngine):
            self.engine = url_or_engine
        else:
            self.engine = create_engine(url_or_engine, **engine_kwargs)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.calls = CallRepository(self.sessions)
        self.agents = AgentRepository(self.sessions)
        self.queue_history = QueueHistory(self.sessions)
        self.users = UserRepository(self.sessions)
        self.user_sessions = SessionRepository(self.sessions)  # ``sessions`` is the sessionmaker
        self.audit = AuditLog(self.sessions)
        self.recordings = RecordingRepository(self.sessions)
        self.consent = ConsentRepository(self.sessions)
        self.retention = RetentionRepository(self.sessions)
        self.bans = BanRepository(self.sessions)

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    async def ping(self) -> None:
        """Raise if the database cannot answer a trivial query."""
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()
