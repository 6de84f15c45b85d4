"""Recording metadata, consent evidence and retention policies as the recording domain stores them.

Consent records are evidence: the table refuses UPDATE and DELETE (a database trigger), so this
repository only ever appends. A recording row is never removed either: when its media is deleted the
row keeps the deletion receipt (``status`` ``deleted`` or ``erased``), which is what a reviewer or a
verifier later needs to tell a lawful deletion from a missing file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from helpline.store.models import ConsentRecord, Recording, RetentionPolicy
from helpline.store.records import Page
from helpline.store.repository import fetch_page, time_window

LIVE_STATUSES = ("recording", "stored", "recovered")
"""Statuses whose media still exists."""


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)


class RecordingRow(_Row):
    """One recording's metadata (the API's schema too)."""

    id: str
    call_id: str
    status: str = Field(description="recording | stored | recovered | empty | deleted | erased")
    caller: str | None
    did: str | None
    queue: str | None
    agent: str | None
    agents: list[dict[str, Any]]
    started_at: datetime
    ended_at: datetime | None
    duration_s: float | None
    channels: list[dict[str, Any]] = Field(description="Channel map: channel index, role, party")
    media_format: dict[str, Any]
    overlays: list[dict[str, Any]] = Field(description="Consent, pauses, holds, transfers, agents")
    consent_outcome: str | None
    consent_ids: list[dict[str, Any]]
    policy: dict[str, Any]
    retention_policy: str
    delete_after: datetime
    floor_until: datetime
    legal_hold: dict[str, Any] | None
    storage_key: str | None
    encrypted: bool
    size_bytes: int | None
    manifest_sha256: str | None
    disposition: str | None
    deleted_at: datetime | None
    deletion: dict[str, Any] | None


class ConsentRow(_Row):
    """One consent decision as stored evidence."""

    id: str
    call_id: str
    party: str
    outcome: str
    method: str
    response: str | None
    policy_id: str
    policy_version: str
    mode: str
    jurisdiction: dict[str, Any]
    prompt_id: str | None
    language: str | None
    prompt_sha256: str | None
    prompt_started_at: datetime | None
    prompt_ended_at: datetime | None
    responded_at: datetime | None
    decided_at: datetime
    clock_source: str
    record_sha256: str


class RetentionRow(_Row):
    name: str
    days: int
    floor_days: int
    purpose: str
    lawful_basis: str
    updated_by: str | None
    updated_at: datetime


class RecordingFilters(BaseModel):
    """Search filters; every one is optional. ``consent`` is the consent outcome."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    caller: str | None = None
    did: str | None = None
    agent: str | None = None
    queue: str | None = None
    disposition: str | None = None
    consent: str | None = None
    status: str | None = None
    call_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class RecordingNotFound(LookupError):
    """No recording has this id."""


class RecordingRepository:
    """Recording rows: written by the recording service, read by the library and the sweeper."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def insert(self, row: Mapping[str, Any]) -> RecordingRow:
        """Insert a new recording row; ``row`` has the model's columns."""
        async with self._sessions() as session, session.begin():
            recording = Recording(**row)
            session.add(recording)
        return RecordingRow.model_validate(recording)

    async def update(self, recording_id: str, **fields: Any) -> RecordingRow:
        """Change some columns of one recording; ``RecordingNotFound`` when it does not exist."""
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                update(Recording).where(Recording.id == recording_id).values(**fields)
                .returning(Recording)
            )
            recording = result.scalar_one_or_none()
            if recording is None:
                raise RecordingNotFound(recording_id)
            return RecordingRow.model_validate(recording)

    async def get(self, recording_id: str) -> RecordingRow | None:
        async with self._sessions() as session:
            recording = await session.get(Recording, recording_id)
            return None if recording is None else RecordingRow.model_validate(recording)

    async def for_call(self, call_id: str) -> list[RecordingRow]:
        async with self._sessions() as session:
            rows = await session.scalars(
                select(Recording).where(Recording.call_id == call_id).order_by(Recording.started_at)
            )
            return [RecordingRow.model_validate(r) for r in rows]

    async def search(
        self, filters: RecordingFilters, *, limit: int = 50, cursor: str | None = None,
        offset: int | None = None,
    ) -> Page[RecordingRow]:
        """Newest first; filters combine with AND."""
        conditions: list[ColumnElement[bool]] = []
        for name in ("caller", "did", "agent", "queue", "disposition", "status", "call_id"):
            value = getattr(filters, name)
            if value is not None:
                conditions.append(getattr(Recording, name) == value)
        if filters.consent is not None:
            conditions.append(Recording.consent_outcome == filters.consent)
        conditions += time_window(Recording.started_at, filters.since, filters.until)
        query = select(Recording).where(*conditions)
        return await fetch_page(self._sessions, query, "recordings", Recording.started_at, Recording.id,
                                RecordingRow, limit=limit, cursor=cursor, offset=offset)

    async def expired(self, now: datetime, limit: int = 500) -> list[RecordingRow]:
        """Recordings whose media still exists and whose delete-after date has passed (held ones too:
        the sweeper reports why it keeps them)."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(Recording)
                .where(Recording.status.in_(LIVE_STATUSES), Recording.delete_after <= now)
                .order_by(Recording.delete_after).limit(limit)
            )
            return [RecordingRow.model_validate(r) for r in rows]

    async def by_caller(self, phone: str) -> list[RecordingRow]:
        """Every recording of calls from ``phone`` (E.164), whatever its status."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(Recording).where(Recording.caller == phone).order_by(Recording.started_at)
            )
            return [RecordingRow.model_validate(r) for r in rows]

    async def unfinished(self) -> list[RecordingRow]:
        """Rows still ``recording``: after a crash, recovery finishes or closes them."""
        async with self._sessions() as session:
            rows = await session.scalars(select(Recording).where(Recording.status == "recording"))
            return [RecordingRow.model_validate(r) for r in rows]


class ConsentRepository:
    """Consent evidence: append and read, nothing else (the database refuses changes)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def append(self, record: Mapping[str, Any]) -> ConsentRow:
        async with self._sessions() as session, session.begin():
            row = ConsentRecord(**record)
            session.add(row)
        return ConsentRow.model_validate(row)

    async def for_call(self, call_id: str) -> list[ConsentRow]:
        async with self._sessions() as session:
            rows = await session.scalars(
                select(ConsentRecord).where(ConsentRecord.call_id == call_id)
                .order_by(ConsentRecord.decided_at, ConsentRecord.id)
            )
            return [ConsentRow.model_validate(r) for r in rows]

    async def get_many(self, ids: Sequence[str]) -> list[ConsentRow]:
        if not ids:
            return []
        async with self._sessions() as session:
            rows = await session.scalars(select(ConsentRecord).where(ConsentRecord.id.in_(list(ids))))
            return [ConsentRow.model_validate(r) for r in rows]


class RetentionPolicyError(ValueError):
    """A change would shorten a policy below its floor; ``field`` names the input."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class RetentionRepository:
    """Retention policies. The configuration seeds them and sets floors; an admin may only lengthen."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def seed(self, policies: Mapping[str, Mapping[str, Any]], now: datetime) -> None:
        """Create missing policies from the configuration; for existing ones raise the floor to the
        configured one (and ``days`` with it when needed). A configured floor never goes down here
        either: lowering a floor is a database change an operator makes on purpose."""
        async with self._sessions() as session, session.begin():
            for name, spec in policies.items():
                row = await session.get(RetentionPolicy, name)
                if row is None:
                    session.add(RetentionPolicy(
                        name=name, days=int(spec["days"]), floor_days=int(spec["floor_days"]),
                        purpose=str(spec["purpose"]), lawful_basis=str(spec["lawful_basis"]),
                        updated_by="config", updated_at=now,
                    ))
                    continue
                floor = max(row.floor_days, int(spec["floor_days"]))
                row.floor_days = floor
                row.days = max(row.days, floor)
                row.purpose = str(spec["purpose"])
                row.lawful_basis = str(spec["lawful_basis"])

    async def get(self, name: str) -> RetentionRow | None:
        async with self._sessions() as session:
            row = await session.get(RetentionPolicy, name)
            return None if row is None else RetentionRow.model_validate(row)

    async def list(self) -> list[RetentionRow]:
        async with self._sessions() as session:
            rows = await session.scalars(select(RetentionPolicy).order_by(RetentionPolicy.name))
            return [RetentionRow.model_validate(r) for r in rows]

    async def set_days(self, name: str, days: int, actor: str, now: datetime) -> RetentionRow:
        """Change how long a policy keeps recordings; refused below the policy's floor."""
        async with self._sessions() as session, session.begin():
            row = await session.get(RetentionPolicy, name)
            if row is None:
                raise RetentionPolicyError(f"no retention policy {name!r}", "name")
            if days < row.floor_days:
                raise RetentionPolicyError(
                    f"days {days} is below the policy's floor of {row.floor_days} days", "days"
                )
            row.days = days
            row.updated_by = actor
            row.updated_at = now
            return RetentionRow.model_validate(row)
