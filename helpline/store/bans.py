"""Bans the SIP edge's guard imposed, kept so they survive a restart and can be lifted from outside.

The guard (``helpline.sbc_bridge.guard``) decides; this table remembers. The running service writes
every ``BanChange`` here, restores the active bans at start, and polls ``changed_since`` so a lift made
by the CLI or the API (another process, or a request) reaches the guard within a second. Writes are
idempotent: applying a change the row already shows leaves ``updated_at`` alone, so the service's own
echo of a lift does not come back to it forever.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from helpline.sbc_bridge.guard.bans import EXPIRY, Ban, BanChange, BanKind
from helpline.store.models import Ban as BanRow

logger = logging.getLogger(__name__)

CHANGE_POLL_SLACK = timedelta(seconds=2)
"""How far back ``BanChanges.as_of`` reaches before the poll, so a write whose transaction took its
``updated_at`` before the poll but committed after it is still seen by the next one."""


class BanRecord(BaseModel):
    """One ban as stored (also the API's schema)."""

    model_config = ConfigDict(frozen=True, from_attributes=True)

    key: str = Field(description="The banned source address, or the locked extension")
    kind: BanKind = Field(description="source (an IP address) or user (an extension: a lock)")
    reason: str = Field(description="Why: auth_failures, flood, user_auth_failures...")
    since: datetime
    until: datetime | None = Field(description="When it ends by itself; null: only when lifted")
    lifted_at: datetime | None
    lifted_by: str | None = Field(description="Who lifted it: a username, cli:<os user>, or expiry")
    updated_at: datetime

    def active_at(self, now: datetime) -> bool:
        return self.lifted_at is None and (self.until is None or self.until > now)

    def as_ban(self) -> Ban:
        """The guard's view of this row (what ``EdgeGuard.restore`` takes)."""
        return Ban(self.key, self.kind, self.reason, self.since, self.until)


@dataclass(frozen=True, slots=True)
class BanChanges:
    """Rows written at or after a poll's ``since`` (at least once: a row may come back unchanged),
    and the ``since`` to pass next time."""

    changed: list[BanRecord]
    as_of: datetime


def ban_key(text: str) -> str:
    """The key a ban is stored under: an IP address in its canonical form (``2001:db8::1``, not
    ``2001:0db8:0:0::1``), anything else (an extension) as given without surrounding blanks."""
    text = text.strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _active(now: datetime) -> list[ColumnElement[bool]]:
    return [BanRow.lifted_at.is_(None), or_(BanRow.until.is_(None), BanRow.until > now)]


class BanRepository:
    """``store.bans``: each call runs in its own short transaction."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], clock: Callable[[], datetime] = _utc_now
    ) -> None:
        self._sessions = sessions
        self._clock = clock

    async def upsert(self, change: BanChange) -> BanRecord | None:
        """Write one guard change. A ban replaces the key's row (a renewed ban clears an old lift); a
        lift or an expiry marks an active row. Returns the row as written, or None when nothing
        changed."""
        now = self._clock()
        ban = change.ban
        async with self._sessions.begin() as session:
            row = await session.get(BanRow, ban.key, with_for_update=True)
            if change.action == "banned":
                fields = {"kind": ban.kind, "reason": ban.reason[:64], "since": ban.since,
                          "until": ban.until, "lifted_at": None, "lifted_by": None}  # fmt: skip
                if row is None:
                    row = BanRow(key=ban.key, updated_at=now, **fields)
                    session.add(row)
                elif any(getattr(row, name) != value for name, value in fields.items()):
                    for name, value in fields.items():
                        setattr(row, name, value)
                    row.updated_at = now
                else:
                    return None
            else:
                if row is None or row.lifted_at is not None:
                    return None
                row.lifted_at = now
                row.lifted_by = (change.by or EXPIRY)[:64]
                row.updated_at = now
            await session.flush()
            return BanRecord.model_validate(row)

    async def get(self, key: str) -> BanRecord | None:
        async with self._sessions() as session:
            row = await session.get(BanRow, key)
            return None if row is None else BanRecord.model_validate(row)

    async def active(self, now: datetime | None = None) -> list[BanRecord]:
        """Bans in force at ``now`` (default: the present): not lifted and not run out."""
        query = select(BanRow).where(*_active(now or self._clock())).order_by(BanRow.since, BanRow.key)
        async with self._sessions() as session:
            return [BanRecord.model_validate(row) for row in (await session.scalars(query)).all()]

    async def list(self, all: bool = False) -> Sequence[BanRecord]:
        """The active bans, newest first; with ``all``, every row (lifted and expired ones too)."""
        if not all:
            return list(reversed(await self.active()))
        query = select(BanRow).order_by(BanRow.since.desc(), BanRow.key)
        async with self._sessions() as session:
            return [BanRecord.model_validate(row) for row in (await session.scalars(query)).all()]

    async def lift(self, key: str, by: str) -> bool:
        """End the active ban of ``key`` now; False when there is none (unknown, lifted or run out)."""
        now = self._clock()
        statement = (
            update(BanRow)
            .where(BanRow.key == key, *_active(now))
            .values(lifted_at=now, lifted_by=by[:64], updated_at=now)
        )
        async with self._sessions.begin() as session:
            result = await session.execute(statement)
            lifted = bool(getattr(result, "rowcount", 0))
        if lifted:
            logger.info("ban lifted", extra={"key": key, "by": by})
        return lifted

    async def changed_since(self, since: datetime | None) -> BanChanges:
        """Rows written at or after ``since`` (all of them when None), oldest change first. Pass
        ``as_of`` back as the next ``since``."""
        as_of = self._clock() - CHANGE_POLL_SLACK
        query = select(BanRow).order_by(BanRow.updated_at, BanRow.key)
        if since is not None:
            query = query.where(BanRow.updated_at >= since)
        async with self._sessions() as session:
            rows = (await session.scalars(query)).all()
            return BanChanges([BanRecord.model_validate(row) for row in rows], as_of)
