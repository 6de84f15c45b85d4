"""Bus sink that persists domain events: CDR rows, per-call event logs and security events.

``publish`` only appends to an in-memory queue; a background task writes batches (one transaction per
batch, every ``flush_interval`` or ``batch_size`` events). One queue and one writer keep each call's
events in publish order. Database errors are retried with backoff; a batch that keeps failing for a
reason other than connectivity is split so one bad event cannot hold the others back, and an event
that still fails alone is logged with its type and call id and counted in ``failed``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from helpline.events.dispositions import DISPOSITIONS
from helpline.events.model import DomainEvent
from helpline.store.models import Call, CallEvent, SecurityEvent
from helpline.store.store import Store

logger = logging.getLogger(__name__)

_OFFERED_FIELDS = ("sip_call_id", "trunk", "caller", "caller_name", "did", "pai", "verstat", "transport")


class StoreSink:
    """Call it with events (subscribe it to the bus); ``start()`` it on the loop, ``aclose()`` it last."""

    def __init__(
        self,
        store: Store,
        *,
        batch_size: int = 500,
        flush_interval: float = 0.05,
        max_pending: int = 100_000,
        retry_initial: float = 0.1,
        retry_max: float = 5.0,
        attempts_before_split: int = 3,
    ) -> None:
        self._store = store
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_pending = max_pending
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._attempts_before_split = attempts_before_split
        self._pending: deque[DomainEvent] = deque()
        self._wakeup = asyncio.Event()
        self._batch_ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._accepted = 0
        self._done = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.written = 0
        """Events committed to the database."""
        self.dropped = 0
        """Events refused because the queue was full or the sink closed."""
        self.failed = 0
        """Events given up on after repeated non-connectivity errors (each one logged)."""
        self.db_errors = 0
        """Failed write attempts (each one logged)."""
        self.batches = 0
        """Transactions committed."""

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        """Start the writer task on the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="store-sink")

    def __call__(self, event: DomainEvent) -> None:
        if event.call_id is None and not event.type.startswith("security."):
            return
        if self._closing or len(self._pending) >= self._max_pending:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.error(
                    "store sink %s; event NOT stored",
                    "is closed" if self._closing else f"queue is full ({self._max_pending})",
                    extra={"event_type": event.type, "call_id": event.call_id, "dropped": self.dropped},
                )
            return
        self._pending.append(event)
        self._accepted += 1
        self._wakeup.set()
        if len(self._pending) >= self._batch_size:
            self._batch_ready.set()

    async def flush(self) -> None:
        """Wait until every event accepted so far is written (or given up on)."""
        target = self._accepted
        if self._done >= target:
            return
        if self._task is None or self._task.done():
            raise RuntimeError("store sink is not running")
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((target, waiter))
        self._batch_ready.set()
        await waiter

    async def aclose(self, give_up_after: float | None = None) -> None:
        """Stop accepting events and write everything queued. If the database stays unreachable
        past ``give_up_after`` seconds, the unwritten events are logged as lost."""
        self._closing = True
        self._wakeup.set()
        self._batch_ready.set()
        if self._task is None:
            if self._pending:
                logger.error("store sink closed before it was started", extra={"lost": len(self._pending)})
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), give_up_after)
        except TimeoutError:
            lost = self._accepted - self._done
            self._task.cancel()
            logger.error("store sink could not flush before shutdown", extra={"lost": lost})

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if len(self._pending) < self._batch_size and not self._closing:
                self._batch_ready.clear()
                try:
                    async with asyncio.timeout(self._flush_interval):
                        await self._batch_ready.wait()
                except TimeoutError:
                    pass
            batch = [self._pending.popleft() for _ in range(min(self._batch_size, len(self._pending)))]
            await self._write_with_retry(batch)
            self._done += len(batch)
            self._release_waiters()

    def _release_waiters(self) -> None:
        still: list[tuple[int, asyncio.Future[None]]] = []
        for target, waiter in self._waiters:
            if target <= self._done:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                still.append((target, waiter))
        self._waiters = still

    async def _write_with_retry(self, batch: list[DomainEvent]) -> None:
        delay = self._retry_initial
        attempts = 0
        while True:
            try:
                await self._write(batch)
            except Exception as exc:
                attempts += 1
                self.db_errors += 1
                if not _is_connectivity_error(exc) and attempts >= self._attempts_before_split:
                    await self._give_up_on(batch, exc)
                    return
                logger.error(
                    "store write failed; retrying in %.2fs",
                    delay,
                    exc_info=True,
                    extra={"events": len(batch), "attempt": attempts, "first_event": batch[0].type},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)
            else:
                self.written += len(batch)
                self.batches += 1
                return

    async def _give_up_on(self, batch: list[DomainEvent], exc: Exception) -> None:
        if len(batch) > 1:
            logger.error(
                "store batch keeps failing; writing its events one by one", extra={"events": len(batch)}
            )
            for event in batch:
                await self._write_with_retry([event])
            return
        event = batch[0]
        self.failed += 1
        logger.error(
            "event could not be stored; giving up on it",
            exc_info=exc,
            extra={"event_type": event.type, "call_id": event.call_id, "failed": self.failed},
        )

    async def _write(self, batch: list[DomainEvent]) -> None:
        async with self._store.sessions.begin() as session:
            call_ids = list(dict.fromkeys(e.call_id for e in batch if e.call_id is not None))
            existing, last_seq = await _known_calls(session, call_ids)
            new_calls: dict[str, dict[str, Any]] = {}
            updates: dict[str, dict[str, Any]] = {}
            event_rows: list[dict[str, Any]] = []
            security_rows: list[dict[str, Any]] = []
            for event in batch:
                data = _jsonable(event)
                if event.call_id is not None:
                    changes = cdr_changes(event)
                    if event.call_id in existing:
                        updates.setdefault(event.call_id, {}).update(changes)
                    else:
                        if event.call_id not in new_calls and event.type != "call.offered":
                            logger.warning(
                                "event for a call never offered; creating its CDR from it",
                                extra={"event_type": event.type, "call_id": event.call_id},
                            )
                        new_calls.setdefault(event.call_id, {"id": event.call_id, "started_at": event.at})
                        new_calls[event.call_id].update(changes)
                    seq = last_seq[event.call_id] = last_seq.get(event.call_id, 0) + 1
                    event_rows.append(
                        {"call_id": event.call_id, "seq": seq, "at": event.at, "type": event.type,
                         "node_id": event.node_id, "data": data}
                    )  # fmt: skip
                if event.type.startswith("security."):
                    security_rows.append(
                        {"at": event.at, "type": event.type, "source": _address(event.data.get("source")),
                         "transport": _text(event.data.get("transport")), "data": data}
                    )  # fmt: skip
            # Rows differ in which columns they set, so each new call is its own INSERT.
            for row in new_calls.values():
                await session.execute(insert(Call).values(**row))
            for call_id, changes in updates.items():
                if changes:
                    await session.execute(update(Call).where(Call.id == call_id).values(**changes))
            if event_rows:
                await session.execute(insert(CallEvent), event_rows)
            if security_rows:
                await session.execute(insert(SecurityEvent), security_rows)


async def _known_calls(session: AsyncSession, call_ids: list[str]) -> tuple[set[str], dict[str, int]]:
    """Which calls already have a CDR, and the last event seq of each."""
    if not call_ids:
        return set(), {}
    existing = set((await session.scalars(select(Call.id).where(Call.id.in_(call_ids)))).all())
    seqs = await session.execute(
        select(CallEvent.call_id, func.max(CallEvent.seq))
        .where(CallEvent.call_id.in_(call_ids))
        .group_by(CallEvent.call_id)
    )
    return existing, {row[0]: row[1] for row in seqs}


def cdr_changes(event: DomainEvent) -> dict[str, Any]:
    """The CDR columns a ``call.*`` event sets (only those its data carries)."""
    data = event.data
    if event.type == "call.offered":
        changes: dict[str, Any] = _present(data, _OFFERED_FIELDS, _text)
        changes["started_at"] = event.at
        if "source" in data:
            changes["source"] = _address(data["source"])
        return changes
    if event.type == "call.refused":
        changes = {"disposition": "refused", "ended_at": event.at}
        changes |= _present(data, ("sip_code",), _sip_code)
        if "reason" in data:
            changes["end_reason"] = _text(data["reason"])
        return changes
    if event.type == "call.answered":
        changes = {"answered_at": event.at, "disposition": "answered"}
        return changes | _present(data, ("codec", "flow_id", "flow_version"), _text)
    if event.type == "call.ended":
        changes = {"ended_at": event.at} | _present(data, ("sip_code",), _sip_code)
        if "reason" in data:
            changes["end_reason"] = _text(data["reason"])
        if "disposition" in data:
            changes["disposition"] = _disposition(data["disposition"], event)
        return changes
    return {}


def _present(data: Mapping[str, Any], keys: Iterable[str], convert: Callable[[Any], Any]) -> dict[str, Any]:
    return {key: convert(data[key]) for key in keys if key in data}


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _sip_code(value: Any) -> int | None:
    if value is None:
        return None
    try:
        code = int(value)
    except (TypeError, ValueError):
        code = 0
    if not 100 <= code <= 699:
        logger.warning("sip_code %r is not a SIP status code; not stored", value)
        return None
    return code


def _disposition(value: Any, event: DomainEvent) -> str | None:
    text = _text(value)
    if text is not None and text not in DISPOSITIONS:
        logger.warning(
            "unknown disposition %r stored as is; add it to helpline.events.Disposition",
            text,
            extra={"call_id": event.call_id},
        )
    return text


def _address(value: Any) -> str | None:
    """``(host, port)`` or ``"host:port"`` as ``host:port`` (``[v6]:port`` for IPv6)."""
    if isinstance(value, list | tuple) and len(value) >= 2:
        host, port = str(value[0]), value[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return _text(value)


def _jsonable(event: DomainEvent) -> dict[str, Any]:
    """The event's data as plain JSON (no NaN, unknown objects as text), so the database accepts it."""
    try:
        result: dict[str, Any] = json.loads(json.dumps(dict(event.data), default=str, allow_nan=False))
        return result
    except (TypeError, ValueError) as exc:
        logger.warning(
            "event data is not JSON-able (%s); storing its repr", exc,
            extra={"event_type": event.type, "call_id": event.call_id},
        )  # fmt: skip
        return {"unserialisable": repr(dict(event.data))}


def _is_connectivity_error(exc: BaseException) -> bool:
    """Errors that mean "the database is not reachable right now" (retry forever) rather than
    "this data cannot be written" (retry a few times, then isolate the bad event)."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | InterfaceError | DisconnectionError | OSError | TimeoutError)
