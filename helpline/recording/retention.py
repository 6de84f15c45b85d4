"""Retention: the sweeper that deletes expired recordings, and erasure by phone number.

Deletion itself (media, peaks, derived files, the ledger's deletion receipt, the row marked deleted)
belongs to the library; this module decides *what* may go. Two things keep a recording: a legal hold,
and the retention floor of its policy (a minimum period the law or the business sets, which no admin
can shorten). Every decision, kept or deleted, is reported with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from helpline.store import Store
from helpline.store.recordings import LIVE_STATUSES, RecordingRow

log = logging.getLogger(__name__)


class Deleter(Protocol):
    """What the library offers the sweeper: delete one recording's media and leave a receipt."""

    async def delete(self, recording_id: str, actor: str, reason: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class Kept:
    recording_id: str
    reason: str
    until: str | None = None


@dataclass(slots=True)
class RetentionReport:
    """What a sweep or an erasure did: deleted ids and kept ones with the reason."""

    deleted: list[str] = field(default_factory=list)
    kept: list[Kept] = field(default_factory=list)
    failed: list[Kept] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "deleted": list(self.deleted),
            "kept": [{"recording_id": k.recording_id, "reason": k.reason, "until": k.until}
                     for k in self.kept],
            "failed": [{"recording_id": k.recording_id, "reason": k.reason} for k in self.failed],
            "notes": list(self.notes),
        }


def keep_reason(row: RecordingRow, now: datetime) -> Kept | None:
    """Why ``row`` must not be deleted now, or None when it may be."""
    if row.legal_hold:
        hold = row.legal_hold
        return Kept(row.id, f"legal hold by {hold.get('by')}: {hold.get('reason')}", None)
    if row.floor_until > now:
        return Kept(row.id, f"retention floor of policy {row.retention_policy!r}",
                    row.floor_until.isoformat())
    return None


async def sweep(store: Store, library: Deleter, *, now: datetime | None = None,
                actor: str = "system:retention", batch: int = 500) -> RetentionReport:
    """Delete every expired recording no hold or floor keeps."""
    now = now or datetime.now(UTC)
    report = RetentionReport()
    for row in await store.recordings.expired(now, batch):
        kept = keep_reason(row, now)
        if kept is not None:
            report.kept.append(kept)
            continue
        try:
            await library.delete(row.id, actor, "retention period ended")
            report.deleted.append(row.id)
        except Exception as exc:
            log.exception("retention could not delete recording %s", row.id,
                          extra={"call_id": row.call_id})
            report.failed.append(Kept(row.id, str(exc)))
    return report


async def erase_phone(store: Store, library: Deleter, phone: str, *, actor: str,
                      now: datetime | None = None) -> RetentionReport:
    """A data subject's erasure request: delete every recording of calls from ``phone`` that no hold or
    floor keeps, clear the personal data on their rows, and report what stays and why."""
    now = now or datetime.now(UTC)
    report = RetentionReport()
    for row in await store.recordings.by_caller(phone):
        if row.status not in LIVE_STATUSES:
            if row.status == "deleted":
                await store.recordings.update(row.id, status="erased", caller=None)
                report.deleted.append(row.id)
            continue
        kept = keep_reason(row, now)
        if kept is not None:
            report.kept.append(kept)
            continue
        try:
            await library.delete(row.id, actor, "erasure request")
            await store.recordings.update(row.id, status="erased", caller=None)
            report.deleted.append(row.id)
        except Exception as exc:
            log.exception("erasure could not delete recording %s", row.id, extra={"call_id": row.call_id})
            report.failed.append(Kept(row.id, str(exc)))
    report.notes.append(
        "consent evidence is kept (proof of lawful processing: GDPR Art. 17(3)(e)); call detail "
        "records are kept under the operator's billing and legal obligations"
    )
    return report


class RetentionSweeper:
    """Runs :func:`sweep` every ``interval_s`` seconds until stopped; each run is logged."""

    def __init__(self, store: Store, library: Deleter, interval_s: float) -> None:
        self._store = store
        self._library = library
        self._interval = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="retention-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                report = await sweep(self._store, self._library)
                if report.deleted or report.failed:
                    log.info("retention sweep: %d deleted, %d kept, %d failed", len(report.deleted),
                             len(report.kept), len(report.failed))
            except Exception:
                log.exception("retention sweep failed; retrying at the next interval")
            await asyncio.sleep(self._interval)
