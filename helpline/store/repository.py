"""Read side: filtered, newest-first pages of calls and security events.

Paging is keyset-based: the opaque cursor encodes the (time, id) of the last item returned, so pages
stay stable while new calls arrive. An ``offset`` is accepted too for simple clients.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import InstrumentedAttribute, selectinload

from helpline.store.models import Call, CallEvent, SecurityEvent
from helpline.store.records import CallDetail, CallRecord, Page, SecurityEventRecord

MAX_LIMIT = 500
R = TypeVar("R", bound=BaseModel)


class InvalidCursor(ValueError):
    """The cursor was not one we issued (or belongs to another listing)."""


@dataclass(frozen=True, slots=True)
class CallFilters:
    sip_call_id: str | None = None
    caller: str | None = None
    did: str | None = None
    trunk: str | None = None
    disposition: str | None = None
    flow_id: str | None = None
    since: datetime | None = None  # started_at >= since
    until: datetime | None = None  # started_at < until


@dataclass(frozen=True, slots=True)
class SecurityEventFilters:
    type: str | None = None  # full type, e.g. "security.blocked_country"
    source: str | None = None
    transport: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def encode_cursor(kind: str, at: datetime, key: str | int) -> str:
    raw = json.dumps([kind, at.isoformat(), key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str, key_type: type[str] | type[int]) -> tuple[datetime, Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        cursor_kind, at_text, key = json.loads(raw)
        if cursor_kind != kind:
            raise InvalidCursor(f"cursor belongs to another listing ({cursor_kind})")
        at = datetime.fromisoformat(at_text)
        if at.tzinfo is None or type(key) is not key_type:
            raise InvalidCursor("malformed cursor")
        return at, key
    except InvalidCursor:
        raise
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidCursor("malformed cursor") from exc


def _check_limit(limit: int, offset: int | None, cursor: str | None) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be within 1..{MAX_LIMIT}")
    if offset is not None and offset < 0:
        raise ValueError("offset must not be negative")
    if offset is not None and cursor is not None:
        raise ValueError("use either cursor or offset, not both")


class CallRepository:
    """Queries over the store; each call opens its own short session."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def list_calls(
        self,
        filters: CallFilters = CallFilters(),
        *,
        limit: int = 50,
        cursor: str | None = None,
        offset: int | None = None,
    ) -> Page[CallRecord]:
        """CDRs matching ``filters``, newest ``started_at`` first."""
        conditions: list[ColumnElement[bool]] = [
            column == value
            for column, value in (
                (Call.sip_call_id, filters.sip_call_id),
                (Call.caller, filters.caller),
                (Call.did, filters.did),
                (Call.trunk, filters.trunk),
                (Call.disposition, filters.disposition),
                (Call.flow_id, filters.flow_id),
            )
            if value is not None
        ]
        conditions += time_window(Call.started_at, filters.since, filters.until)
        return await fetch_page(
            self._sessions, select(Call).where(*conditions), "calls", Call.started_at, Call.id, CallRecord,
            limit=limit, cursor=cursor, offset=offset,
        )  # fmt: skip

    async def get_call(self, call_id: str) -> CallDetail | None:
        """One CDR with its events in publish order, or None."""
        async with self._sessions() as session:
            call = await session.scalar(
                select(Call).where(Call.id == call_id).options(selectinload(Call.events))
            )
            return None if call is None else CallDetail.model_validate(call)

    async def close_interrupted(self) -> int:
        """Close the CDRs a crash left open (no ``ended_at``): disposition ``failed``, the end taken
        from the call's last stored event. Run at start, before any call is taken: in one process no
        call is live then. (Several nodes sharing a database will need to scope this to one node.)"""
        last_event = (
            select(CallEvent.call_id, func.max(CallEvent.at).label("last_at"))
            .group_by(CallEvent.call_id).subquery()
        )
        async with self._sessions() as session, session.begin():
            rows = (await session.execute(
                select(Call, last_event.c.last_at)
                .outerjoin(last_event, last_event.c.call_id == Call.id)
                .where(Call.ended_at.is_(None))
            )).all()
            for call, last_at in rows:
                call.ended_at = last_at or call.answered_at or call.started_at
                call.disposition = "failed"
                call.end_reason = "interrupted: the server stopped before the call ended"
        return len(rows)

    async def list_security_events(
        self,
        filters: SecurityEventFilters = SecurityEventFilters(),
        *,
        limit: int = 50,
        cursor: str | None = None,
        offset: int | None = None,
    ) -> Page[SecurityEventRecord]:
        """Security events matching ``filters``, newest first."""
        conditions: list[ColumnElement[bool]] = [
            column == value
            for column, value in (
                (SecurityEvent.type, filters.type),
                (SecurityEvent.source, filters.source),
                (SecurityEvent.transport, filters.transport),
            )
            if value is not None
        ]
        conditions += time_window(SecurityEvent.at, filters.since, filters.until)
        return await fetch_page(
            self._sessions, select(SecurityEvent).where(*conditions), "security", SecurityEvent.at,
            SecurityEvent.id, SecurityEventRecord, limit=limit, cursor=cursor, offset=offset,
        )  # fmt: skip


async def fetch_page(
    sessions: async_sessionmaker[AsyncSession],
    query: Select[Any],
    kind: str,
    time_column: InstrumentedAttribute[datetime],
    key_column: InstrumentedAttribute[Any],
    record: type[R],
    *,
    limit: int,
    cursor: str | None,
    offset: int | None,
) -> Page[R]:
    """One newest-first page of ``query``'s rows as ``record``s, keyed on (time, id) for the cursor."""
    _check_limit(limit, offset, cursor)
    if cursor is not None:
        at, key = decode_cursor(kind, cursor, key_column.type.python_type)
        query = query.where(or_(time_column < at, and_(time_column == at, key_column < key)))
    query = query.order_by(time_column.desc(), key_column.desc()).limit(limit + 1)
    if offset:
        query = query.offset(offset)
    async with sessions() as session:
        rows: Sequence[Any] = (await session.scalars(query)).all()
    items = [record.model_validate(row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(kind, getattr(last, time_column.key), getattr(last, key_column.key))
    return Page[record](items=items, next_cursor=next_cursor)  # type: ignore[valid-type]


def time_window(
    column: InstrumentedAttribute[datetime], since: datetime | None, until: datetime | None
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if since is not None:
        conditions.append(column >= since)
    if until is not None:
        conditions.append(column < until)
    return conditions
