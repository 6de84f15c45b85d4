"""``/api/queues``: live queue views from the runtime, KPIs recomputed from the stored events, and the
routing decisions of one call."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from helpline.queue.config import QueueConfig
from helpline.queue.kpi import compute_kpis
from helpline.store.queue_history import ROUTING_EVENT_TYPES
from helpline.store.store import Store
from helpline.web.errors import ApiError
from helpline.web.parsing import json_response, parse_query
from helpline.web.queries import KpiQuery, RoutingQuery
from helpline.web.queue_port import QueueView
from helpline.web.routing import routing_report

DEFAULT_KPI_WINDOW = timedelta(hours=24)


class QueueList(BaseModel):
    items: list[dict[str, Any]] = Field(description="Live view of each queue, as the runtime reports it")


class KpiReport(BaseModel):
    queue: str
    since: datetime
    until: datetime
    sl_threshold_s: float
    short_abandon_s: float
    kpis: dict[str, Any] = Field(
        description="helpline.queue.kpi.Kpis: totals and per queue (service level, ASA, AHT, abandonment, "
        "longest wait, EWT accuracy), occupancy per agent, and the formulas used"
    )


class QueueRoutes:
    """Handlers of the queue endpoints and of a call's routing explanation."""

    def __init__(
        self,
        store: Store,
        queues: QueueView | None,
        queue_configs: Mapping[str, QueueConfig],
        queue_names: Callable[[], set[str]],
    ) -> None:
        self.store = store
        self.queues = queues
        self.queue_configs = queue_configs
        self.queue_names = queue_names

    async def list_queues(self, _request: Request) -> Response:
        items = [] if self.queues is None else self.queues.queues()
        return json_response(QueueList(items=items))

    async def get_queue(self, request: Request) -> Response:
        name = request.path_params["name"]
        view = None if self.queues is None else self.queues.queue(name)
        if view is None:
            raise ApiError(404, "no such queue", "name")
        return JSONResponse(view)

    def _config(self, name: str) -> QueueConfig:
        config = None if self.queues is None else self.queues.queue_config(name)
        if config is None:
            config = self.queue_configs.get(name)
        return config if config is not None else QueueConfig()

    async def kpis(self, request: Request) -> Response:
        name = request.path_params["name"]
        query = parse_query(request, KpiQuery)
        if name not in self.queue_names():
            raise ApiError(404, "no such queue", "name")
        until = query.until or datetime.now(UTC)
        since = query.since or until - DEFAULT_KPI_WINDOW
        if since >= until:
            raise ApiError(400, "since must be before until", "since")
        config = self._config(name)
        members = [
            agent.extension
            for agent in await self.store.agents.list()
            if any(m.queue == name for m in agent.queues)
        ]
        events = await self.store.queue_history.kpi_events(name, since, until, extensions=members)
        compute = functools.partial(
            compute_kpis, events, sl_threshold_s=config.sl_threshold_s,
            short_abandon_s=config.short_abandon_s, since=since.timestamp(), until=until.timestamp(),
        )  # fmt: skip
        result = await asyncio.to_thread(compute)  # CPU-bound over a whole window: off the loop
        report = KpiReport(
            queue=name, since=since, until=until, sl_threshold_s=config.sl_threshold_s,
            short_abandon_s=config.short_abandon_s, kpis=result.to_dict(),
        )  # fmt: skip
        return json_response(report)

    async def call_routing(self, request: Request) -> Response:
        call_id = request.path_params["call_id"]
        query = parse_query(request, RoutingQuery)
        events = await self.store.queue_history.call_events(call_id, ROUTING_EVENT_TYPES)
        if events is None:
            raise ApiError(404, "no such call", "call_id")
        return json_response(routing_report(call_id, events, query.agent))
