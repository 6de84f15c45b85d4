"""Bans between the running guard and the ``bans`` table: stored as they happen, restored at start,
and lifted when another process (the CLI) or the API lifts them in the table.

The guard (``helpline.sbc_bridge.guard``) knows no store; this is the one place that joins them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from helpline.sbc_bridge.guard import BanChange, EdgeGuard
from helpline.sbc_bridge.guard.bans import EXPIRY
from helpline.store.bans import CHANGE_POLL_SLACK, BanRecord, BanRepository

log = logging.getLogger(__name__)

BAN_POLL_S = 1.0
BAN_WRITE_ATTEMPTS = 5
BAN_QUEUE_MAX = 10_000


class BanSync:
    """Keeps the guard's bans and the ``bans`` table in step, both ways, without blocking the loop.

    The guard reports every change synchronously on the event loop (``on_change``); a writer task
    stores them in order. At start the active bans are put back into the guard. Every ``BAN_POLL_S``
    the table is polled for rows another process (the CLI) or a request (the API) wrote: a lifted ban
    leaves the guard, an active one it lacks (written by another node) joins it. A row only acts on
    the ban it describes (same ``since`` or older), so a lift never ends a newer ban of the same key.
    """

    def __init__(self, guard: EdgeGuard, bans: BanRepository) -> None:
        self._guard = guard
        self._bans = bans
        self._queue: asyncio.Queue[BanChange] = asyncio.Queue(BAN_QUEUE_MAX)
        self._tasks: list[asyncio.Task[None]] = []
        self.dropped = 0
        """Changes not stored because the writer fell ``BAN_QUEUE_MAX`` behind (logged each time)."""

    def on_change(self, change: BanChange) -> None:
        """The guard's ``on_ban_change``: queue the change for the writer (never blocks)."""
        try:
            self._queue.put_nowait(change)
        except asyncio.QueueFull:
            self.dropped += 1
            log.error("ban change not stored: the writer is %d behind", self._queue.qsize(),
                      extra={"key": change.ban.key, "action": change.action})  # fmt: skip

    async def start(self) -> None:
        """Restore the active bans into the guard, then start the writer and the poll."""
        since = datetime.now(UTC) - CHANGE_POLL_SLACK
        active = await self._bans.active()
        self._guard.restore(record.as_ban() for record in active)
        if active:
            log.info("bans restored from the store", extra={"bans": len(active)})
        self._tasks = [
            asyncio.create_task(self._write(), name="ban-writer"),
            asyncio.create_task(self._poll(since), name="ban-poll"),
        ]

    async def close(self, timeout: float = 5.0) -> None:
        """Stop polling and store what is still queued (at most ``timeout`` seconds)."""
        writer, poll = self._tasks or (None, None)
        if poll is not None:
            poll.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poll
        if writer is None:
            return
        try:
            async with asyncio.timeout(timeout):
                await self._queue.join()
        except TimeoutError:
            log.error("ban changes not stored at shutdown", extra={"pending": self._queue.qsize()})
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer

    async def _write(self) -> None:
        while True:
            change = await self._queue.get()
            try:
                await self._store(change)
            finally:
                self._queue.task_done()

    async def _store(self, change: BanChange) -> None:
        for attempt in range(1, BAN_WRITE_ATTEMPTS + 1):
            try:
                await self._bans.upsert(change)
                return
            except Exception:
                if attempt == BAN_WRITE_ATTEMPTS:
                    log.exception("could not store a ban change; giving up",
                                  extra={"key": change.ban.key, "action": change.action})  # fmt: skip
                    return
                log.warning("could not store a ban change; retrying", exc_info=True,
                            extra={"key": change.ban.key, "action": change.action})  # fmt: skip
                await asyncio.sleep(0.2 * attempt)

    async def _poll(self, since: datetime) -> None:
        while True:
            await asyncio.sleep(BAN_POLL_S)
            try:
                changes = await self._bans.changed_since(since)
            except Exception:
                log.exception("could not poll the bans table; trying again")
                continue
            since = changes.as_of
            now = datetime.now(UTC)
            for record in changes.changed:
                self.apply(record, now)

    def apply(self, record: BanRecord, now: datetime) -> None:
        """Bring the guard in line with one row of the table."""
        held = self._guard.bans.check(record.key)
        if held is not None and held.since > record.since:
            return  # the guard banned it again since; the row will follow
        if record.active_at(now):
            if held is None or held.since < record.since or held.until != record.until:
                self._guard.restore([record.as_ban()])
        elif held is not None and record.lifted_at is not None and record.lifted_by != EXPIRY:
            self._guard.bans.lift(record.key, record.lifted_by or "store")
