"""Bus sink that persists domain events: CDR rows, per-call event logs, security events and the
call-less ``agent.*`` events (presence, reachability) in ``agent_events``.

``publish`` only appends to an in-memory queue; a background task writes batches (one transaction per
batch, every ``flush_interval`` or as soon as ``batch_size`` events wait). One queue and one writer keep
each call's events in publish order. A batch costs a handful of statements whatever its size: one
INSERT of its new CDRs, one UPDATE per set of CDR columns it changes, one INSERT of its call events,
one of its security events and one of its agent events; each open call's next ``seq`` is kept in
memory, so only a call this process has not seen yet (after a restart) is looked up. Database errors
are retried with backoff; a batch that keeps failing for a reason other than connectivity is split so
one bad event cannot hold the others back, and an event that still fails alone is logged with its type
and call id and counted in ``failed``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, func, insert, select, update
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError

from helpline.events.dispositions import DISPOSITIONS
from helpline.events.model import DomainEvent
from helpline.store.models import AgentEvent, Call, CallEvent, SecurityEvent
from helpline.store.store import Store

logger = logging.getLogger(__name__)

_OFFERED_FIELDS = ("sip_call_id", "trunk", "caller", "caller_name", "did", "pai", "verstat", "transport")
_CALL_CLOSERS = frozenset({"call.ended", "call.refused"})
_CALLS = cast(Table, Call.__table__)
_CALL_EVENTS = cast(Table, CallEvent.__table__)
_SECURITY_EVENTS = cast(Table, SecurityEvent.__table__)
_AGENT_EVENTS = cast(Table, AgentEvent.__table__)
# Events without a call that are stored anyway: security events, and agent.* (presence, reachability).
_NON_CALL_STORED = ("security.", "agent.")
# New CDRs of a batch go in one executemany INSERT, so every row names every column.
_NO_CDR: dict[str, Any] = dict.fromkeys(_CALLS.columns.keys())
_CALL_ID_PARAM = "cdr_id"
# SET comes from each parameter set's column keys; all sets of one executemany share their keys.
_UPDATE_CALL = update(_CALLS).where(_CALLS.c.id == bindparam(_CALL_ID_PARAM))


class StoreSink:
    """Call it with events (subscribe it to the bus); ``start()`` it on the loop, ``aclose()`` it last."""

    def __init__(
        self,
        store: Store,
        *,
        batch_size: int = 500,
        flush_interval: float = 0.25,
        max_pending: int = 100_000,
        max_tracked_calls: int = 50_000,
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
        self._max_tracked_calls = max_tracked_calls
        # call id -> last event seq written, for calls with a stored CDR that have not ended. This sink
        # is the only writer of these tables, so a call found here needs no query; one missing from it
        # (a restart, an evicted or a never-offered call) is looked up once.
        self._last_seq: dict[str, int] = {}
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
        if event.call_id is None and not event.type.startswith(_NON_CALL_STORED):
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
            # Wait for more events only if nobody needs these now. A flush() that came before this
            # point is a waiter, not only a set event, so clearing the event cannot lose it.
            if len(self._pending) < self._batch_size and not self._closing and not self._waiters:
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
                await self._write(batch, verify=attempts > 0)
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

    async def _write(self, batch: list[DomainEvent], *, verify: bool = False) -> None:
        async with self._store.engine.begin() as connection:
            written = await connection.run_sync(self._write_rows, batch, verify)
        self._remember(written)

    def _write_rows(self, connection: Connection, batch: list[DomainEvent], verify: bool) -> _Written:
        """One batch's statements, run inside one greenlet (one hop per batch, not per statement):
        new calls in one INSERT, CDR updates grouped by the columns they set, events in one INSERT.

        ``verify`` (a retry) looks every call up instead of trusting memory: the failed attempt may
        have committed after all, and the rows it wrote must not be counted twice."""
        known = self._last_seq
        first_type: dict[str, str] = {}
        for event in batch:
            if event.call_id is not None and event.call_id not in first_type:
                first_type[event.call_id] = event.type
        seqs: dict[str, int] = {}
        unknown: list[str] = []
        for seen, type_ in first_type.items():
            if not verify and seen in known:
                seqs[seen] = known[seen]
            elif verify or type_ != "call.offered":
                unknown.append(seen)
            # else: call.offered opens a call (ids are fresh uuid4s), so its CDR is new: no lookup.
        if unknown:
            seqs.update(_stored_calls(connection, unknown))
        new_calls: dict[str, dict[str, Any]] = {}
        updates: dict[str, dict[str, Any]] = {}
        event_rows: list[dict[str, Any]] = []
        security_rows: list[dict[str, Any]] = []
        agent_rows: list[dict[str, Any]] = []
        ended: set[str] = set()
        for event in batch:
            call_id = event.call_id
            data = _jsonable(event)
            if call_id is not None:
                changes = cdr_changes(event)
                if call_id in new_calls:
                    new_calls[call_id].update(changes)
                    seq = seqs[call_id]
                elif call_id in seqs:  # its CDR is stored already
                    if changes:
                        updates.setdefault(call_id, {}).update(changes)
                    seq = seqs[call_id]
                else:
                    if event.type != "call.offered":
                        logger.warning(
                            "event for a call never offered; creating its CDR from it",
                            extra={"event_type": event.type, "call_id": call_id},
                        )
                    new_calls[call_id] = dict(_NO_CDR, id=call_id, started_at=event.at) | changes
                    seq = 0
                seqs[call_id] = seq + 1
                event_rows.append(
                    {"call_id": call_id, "seq": seq + 1, "at": event.at, "type": event.type,
                     "node_id": event.node_id, "data": data}
                )  # fmt: skip
                if event.type in _CALL_CLOSERS:
                    ended.add(call_id)
            if event.type.startswith("security."):
                security_rows.append(
                    {"at": event.at, "type": event.type, "source": _address(event.data.get("source")),
                     "transport": _text(event.data.get("transport")), "data": data}
                )  # fmt: skip
            elif call_id is None:  # agent.*: the only other call-less events __call__ accepts
                agent_rows.append(
                    {"at": event.at, "type": event.type, "extension": _extension(event), "data": data}
                )
        if new_calls:
            connection.execute(insert(_CALLS), list(new_calls.values()))
        for params in _group_by_columns(updates):
            connection.execute(_UPDATE_CALL, params)
        if event_rows:
            connection.execute(insert(_CALL_EVENTS), event_rows)
        if security_rows:
            connection.execute(insert(_SECURITY_EVENTS), security_rows)
        if agent_rows:
            connection.execute(insert(_AGENT_EVENTS), agent_rows)
        return _Written(seqs, ended)

    def _remember(self, written: _Written) -> None:
        """After a commit: the calls' last seq, minus calls that ended, within ``max_tracked_calls``."""
        known = self._last_seq
        known.update(written.seqs)
        for call_id in written.ended:
            del known[call_id]
        excess = len(known) - self._max_tracked_calls
        if excess > 0:
            for call_id in list(itertools.islice(known, excess)):
                del known[call_id]


@dataclass(frozen=True, slots=True)
class _Written:
    seqs: dict[str, int]
    """Each call's last event seq after the batch."""
    ended: set[str]
    """Calls whose call.ended/call.refused the batch wrote: no more events expected."""


def _stored_calls(connection: Connection, call_ids: list[str]) -> dict[str, int]:
    """Which of these calls already have a CDR, with their last event seq (0 if none)."""
    rows = connection.execute(
        select(_CALLS.c.id, func.coalesce(func.max(_CALL_EVENTS.c.seq), 0))
        .select_from(_CALLS.outerjoin(_CALL_EVENTS, _CALL_EVENTS.c.call_id == _CALLS.c.id))
        .where(_CALLS.c.id.in_(call_ids))
        .group_by(_CALLS.c.id)
    )
    return {call_id: seq for call_id, seq in rows}


def _group_by_columns(updates: Mapping[str, dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """CDR updates as executemany parameter lists, one list per set of columns changed."""
    groups: dict[frozenset[str], list[dict[str, Any]]] = {}
    for call_id, changes in updates.items():
        if changes:
            groups.setdefault(frozenset(changes), []).append({**changes, _CALL_ID_PARAM: call_id})
    return list(groups.values())


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


def _extension(event: DomainEvent) -> str | None:
    """The agent an ``agent.*`` event is about (``data["extension"]``); stored anyway when missing."""
    extension = event.data.get("extension")
    if extension is None:
        logger.warning("agent event without an extension", extra={"event_type": event.type})
        return None
    return str(extension)


def _jsonable(event: DomainEvent) -> dict[str, Any]:
    """The event's data as plain JSON types, so the database's JSON serialiser accepts it: tuples and
    sets become lists, mappings dicts, times ISO text, NaN/infinity and unknown objects text."""
    try:
        return cast(dict[str, Any], _json_value(event.data))
    except RecursionError as exc:  # a reference cycle, or absurd nesting
        logger.warning(
            "event data is not JSON-able (%s); storing its repr", exc,
            extra={"event_type": event.type, "call_id": event.call_id},
        )  # fmt: skip
        return {"unserialisable": repr(dict(event.data))}


def _json_value(value: Any) -> Any:
    """``value`` itself when it is plain JSON already (the usual case: nothing is copied), else a
    converted copy."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        return value if math.isfinite(value) else str(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or _json_value(item) is not item:
                return _json_object(value)
        return value
    if kind is list:
        for item in value:
            if _json_value(item) is not item:
                return [_json_value(i) for i in value]
        return value
    if isinstance(value, Mapping):
        return _json_object(value)
    if isinstance(value, list | tuple | set | frozenset | deque):
        return [_json_value(i) for i in value]
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, int | float):  # enums and other subclasses: their number
        return _json_value(float(value) if isinstance(value, float) else int(value))
    if isinstance(value, str):
        return str.__str__(value)  # a str enum's value, not "Cls.MEMBER"
    return str(value)


def _json_object(value: Mapping[Any, Any]) -> dict[str, Any]:
    return {_json_key(key): _json_value(item) for key, item in value.items()}


def _json_key(key: Any) -> str:
    if isinstance(key, str):
        return str.__str__(key)
    if key is None or isinstance(key, bool):
        return "null" if key is None else ("true" if key else "false")
    return str(key)


def _is_connectivity_error(exc: BaseException) -> bool:
    """Errors that mean "the database is not reachable right now" (retry forever) rather than
    "this data cannot be written" (retry a few times, then isolate the bad event)."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | InterfaceError | DisconnectionError | OSError | TimeoutError)
