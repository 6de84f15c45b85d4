"""What the queue left in the store, read back for routing explanations and KPIs.

Call-scoped queue events live in ``call_events`` (with the call's other events), call-less agent
events in ``agent_events``. These reads use the existing indexes only (calls by ``started_at``, a
call's events by ``call_id``, agent events by ``at``), so the event writer pays for no new index.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from helpline.store.models import AgentEvent, Call, CallEvent
from helpline.store.records import CallEventRecord

ROUTING_EVENT_TYPES = ("queue.offer", "queue.no_match")
KPI_CALL_EVENT_TYPES = ("queue.joined", "queue.connected", "queue.left", "queue.ewt", "queue.ewt_outcome")
DEFAULT_LOOKBACK = timedelta(hours=4)
"""How long before a KPI window a call may have started and still have queue events inside it (the
default maximum call duration)."""


class QueueHistory:
    """Read-only queries over stored queue and agent events."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def call_events(
        self, call_id: str, types: Collection[str] = ROUTING_EVENT_TYPES
    ) -> list[CallEventRecord] | None:
        """The call's events of ``types`` in publish order; None when the call is unknown."""
        async with self._sessions() as session:
            if await session.get(Call, call_id) is None:
                return None
            rows = await session.scalars(
                select(CallEvent)
                .where(CallEvent.call_id == call_id, CallEvent.type.in_(list(types)))
                .order_by(CallEvent.seq)
            )
            return [CallEventRecord.model_validate(row) for row in rows]

    async def kpi_events(
        self,
        queue: str,
        since: datetime,
        until: datetime,
        *,
        extensions: Collection[str] = (),
        lookback: timedelta = DEFAULT_LOOKBACK,
    ) -> list[dict[str, Any]]:
        """Events for ``compute_kpis`` (mappings with ``type``, ``at``, ``call_id``, ``data``), in time
        order, from calls started in ``[since - lookback, until)`` and agent events in the same span:

        * the queue events of calls that touched ``queue`` (events naming another queue left out);
        * the ``agent.*`` events of those calls, and of any call for the ``extensions`` (the queue's
          members: their state on other queues' calls matters to their occupancy);
        * the call-less ``agent.*`` events of ``extensions``, so their states at ``since`` are known.
        """
        start = since - lookback
        members = set(extensions)
        async with self._sessions() as session:
            call_rows = (
                await session.execute(
                    select(CallEvent.call_id, CallEvent.type, CallEvent.at, CallEvent.data)
                    .join(Call, Call.id == CallEvent.call_id)
                    .where(
                        Call.started_at >= start,
                        Call.started_at < until,
                        or_(CallEvent.type.in_(KPI_CALL_EVENT_TYPES), CallEvent.type.startswith("agent.")),
                    )
                    .order_by(CallEvent.call_id, CallEvent.seq)
                )
            ).all()
            agent_rows: Sequence[Any] = ()
            if members:
                agent_rows = (
                    await session.execute(
                        select(AgentEvent.type, AgentEvent.at, AgentEvent.data)
                        .where(
                            AgentEvent.at >= start, AgentEvent.at < until, AgentEvent.extension.in_(members)
                        )
                        .order_by(AgentEvent.at, AgentEvent.id)
                    )
                ).all()
        touched = {
            call_id
            for call_id, type_, _at, data in call_rows
            if type_.startswith("queue.") and data.get("queue") == queue
        }
        events: list[dict[str, Any]] = []
        for call_id, type_, at, data in call_rows:
            if type_.startswith("agent."):
                keep = call_id in touched or data.get("extension") in members
            else:
                keep = call_id in touched and data.get("queue", queue) == queue
            if keep:
                events.append({"type": type_, "at": at, "call_id": call_id, "data": data})
        events += [{"type": type_, "at": at, "call_id": None, "data": data} for type_, at, data in agent_rows]
        events.sort(key=lambda event: event["at"])
        return events
