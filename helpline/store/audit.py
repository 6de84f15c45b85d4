"""The audit log: who did what to which object, from where, and whether it was allowed.

Entries are hash-chained: each carries the ``entry_hash`` of the one before it (``prev_hash``) and its
own ``entry_hash``, the SHA-256 of the previous hash and the entry's canonical JSON (its id included).
The database refuses UPDATE and DELETE on the table (migration 0003), and ``verify_chain`` finds an
edited, removed or inserted row if someone gets past that.

Appends must stay one chain even when the service and the CLI (separate processes) write at once. The
id is part of what is hashed and is chosen as the previous id plus one, so two writers that read the
same tail collide on the primary key instead of forking the chain; the loser retries. Inside one
process an ``asyncio.Lock`` serialises appends so they do not collide in the first place.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from helpline.store.models import AuditEntry
from helpline.store.records import Page
from helpline.store.repository import fetch_page, time_window

logger = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
APPEND_ATTEMPTS = 8
EXPORT_BATCH = 500
Outcome = Literal["ok", "denied", "failed"]
OUTCOMES: frozenset[str] = frozenset(("ok", "denied", "failed"))


class AuditRecord(BaseModel):
    """One audit entry as stored (also the API's schema)."""

    model_config = ConfigDict(frozen=True, from_attributes=True)

    id: int = Field(description="Position in the log, from 1, without gaps")
    at: datetime
    actor: str | None = Field(description="Username, cli:<os user>, or null for the system")
    role: str | None
    action: str = Field(description="e.g. sign_in, sign_out, role_change, play, download")
    target_type: str | None = Field(description="e.g. user, recording, route")
    target_id: str | None
    outcome: str = Field(description="ok, denied or failed")
    client_ip: str | None
    detail: dict[str, Any]
    prev_hash: str
    entry_hash: str


@dataclass(frozen=True, slots=True)
class AuditFilters:
    actor: str | None = None
    action: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    outcome: str | None = None
    since: datetime | None = None  # at >= since
    until: datetime | None = None  # at < until


@dataclass(frozen=True, slots=True)
class ChainReport:
    """What ``verify_chain`` found: ``ok`` with the number of entries, or the first bad entry."""

    ok: bool
    entries: int
    first_bad_id: int | None = None
    problem: str | None = None


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _timestamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_hash(prev_hash: str, entry: Mapping[str, Any]) -> str:
    """SHA-256 over the previous hash and the entry's fields (``id``, ``at`` ... ``detail``)."""
    body = {
        "id": entry["id"], "at": _timestamp(entry["at"]), "actor": entry["actor"], "role": entry["role"],
        "action": entry["action"], "target_type": entry["target_type"], "target_id": entry["target_id"],
        "outcome": entry["outcome"], "client_ip": entry["client_ip"], "detail": entry["detail"],
    }  # fmt: skip
    return hashlib.sha256(f"{prev_hash}\n{canonical_json(body)}".encode()).hexdigest()


def _conditions(filters: AuditFilters) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [
        column == value
        for column, value in (
            (AuditEntry.actor, filters.actor),
            (AuditEntry.action, filters.action),
            (AuditEntry.target_type, filters.target_type),
            (AuditEntry.target_id, filters.target_id),
            (AuditEntry.outcome, filters.outcome),
        )
        if value is not None
    ]
    return conditions + time_window(AuditEntry.at, filters.since, filters.until)


def _clip(value: str | None, length: int) -> str | None:
    return None if value is None else value[:length]


class AuditLog:
    """Append, list, export and verify the audit log (``store.audit``)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._lock = asyncio.Lock()

    async def append(
        self,
        action: str,
        *,
        actor: str | None = None,
        role: str | None = None,
        target_type: str | None = None,
        target_id: str | None = None,
        outcome: Outcome = "ok",
        client_ip: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        """Add one entry at the end of the chain and return it. ``detail`` must be JSON-able.

        Raises ``ValueError`` for an unknown ``outcome`` or a ``detail`` that is not JSON."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {sorted(OUTCOMES)}, not {outcome!r}")
        plain = json.loads(canonical_json(dict(detail or {})))  # what the database hands back
        fields: dict[str, Any] = {
            "actor": _clip(actor, 64), "role": _clip(role, 16), "action": action[:32],
            "target_type": _clip(target_type, 32), "target_id": _clip(target_id, 64),
            "outcome": outcome, "client_ip": client_ip, "detail": plain,
        }  # fmt: skip
        async with self._lock:
            for attempt in range(1, APPEND_ATTEMPTS + 1):
                try:
                    return await self._append_once(fields)
                except (IntegrityError, OperationalError) as exc:
                    # Another process appended the same id first (or held SQLite's write lock).
                    if attempt == APPEND_ATTEMPTS:
                        raise
                    logger.info("audit append raced another writer, retrying", extra={"error": str(exc)})
                    await asyncio.sleep(0.01 * attempt)
        raise AssertionError("unreachable")

    async def _append_once(self, fields: dict[str, Any]) -> AuditRecord:
        async with self._sessions.begin() as session:
            last = (
                await session.execute(
                    select(AuditEntry.id, AuditEntry.entry_hash).order_by(AuditEntry.id.desc()).limit(1)
                )
            ).first()
            prev_id, prev_hash = (0, GENESIS_HASH) if last is None else (int(last[0]), str(last[1]))
            entry = {"id": prev_id + 1, "at": datetime.now(UTC), **fields}
            row = AuditEntry(**entry, prev_hash=prev_hash, entry_hash=entry_hash(prev_hash, entry))
            session.add(row)
            await session.flush()
            return AuditRecord.model_validate(row)

    async def list(
        self,
        filters: AuditFilters = AuditFilters(),
        *,
        limit: int = 50,
        cursor: str | None = None,
        offset: int | None = None,
    ) -> Page[AuditRecord]:
        """Entries matching ``filters``, newest first (keyset paging on (at, id))."""
        return await fetch_page(
            self._sessions, select(AuditEntry).where(*_conditions(filters)), "audit", AuditEntry.at,
            AuditEntry.id, AuditRecord, limit=limit, cursor=cursor, offset=offset,
        )  # fmt: skip

    async def export(self, filters: AuditFilters = AuditFilters()) -> AsyncIterator[AuditRecord]:
        """Every entry matching ``filters``, oldest first, read in batches."""
        after = 0
        conditions = _conditions(filters)
        while True:
            query = (
                select(AuditEntry)
                .where(AuditEntry.id > after, *conditions)
                .order_by(AuditEntry.id)
                .limit(EXPORT_BATCH)
            )
            async with self._sessions() as session:
                rows = (await session.scalars(query)).all()
            for row in rows:
                yield AuditRecord.model_validate(row)
            if len(rows) < EXPORT_BATCH:
                return
            after = rows[-1].id

    async def verify_chain(self) -> ChainReport:
        """Recompute every hash in id order: ids must run 1, 2, 3... and each entry must name its
        predecessor's hash and hash to its own ``entry_hash``."""
        expected_prev, expected_id, count = GENESIS_HASH, 1, 0
        async for entry in self.export():
            if entry.id != expected_id:
                return ChainReport(False, count, entry.id, f"expected entry {expected_id}, found {entry.id}")
            if entry.prev_hash != expected_prev:
                return ChainReport(False, count, entry.id, "prev_hash does not match the previous entry")
            if entry_hash(entry.prev_hash, entry.model_dump()) != entry.entry_hash:
                return ChainReport(False, count, entry.id, "entry_hash does not match the entry's content")
            expected_prev, expected_id, count = entry.entry_hash, expected_id + 1, count + 1
        return ChainReport(True, count)
