"""The HTTP API: health, Prometheus metrics, CDRs, call event logs and security events.

Authentication is not here yet: pass it later as a Starlette middleware through ``middleware``; every
route goes through the middleware stack. Binding (127.0.0.1 by default) is the server's job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from helpline.events.bus import EventBus
from helpline.store.repository import InvalidCursor
from helpline.store.store import Store
from helpline.web.errors import EXCEPTION_HANDLERS, ApiError, error_response, from_validation_error
from helpline.web.flows import FlowCatalog, FlowList, flow_list
from helpline.web.openapi import build_openapi
from helpline.web.queries import CallQuery, PageQuery, SecurityEventQuery

logger = logging.getLogger(__name__)

HealthCheck = Callable[[], Mapping[str, Any]]
"""Returns JSON-able facts about the application, shown under ``app`` in /healthz. The application
counts as down (503) when they hold ``"ok": False`` or a ``"status"`` other than ``"ok"`` (e.g.
``"starting"``). Must not block."""

DB_PING_TIMEOUT_S = 2.0
Q = TypeVar("Q", bound=PageQuery)


def _version() -> str:
    try:
        return version("helpline")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def _parse_query(request: Request, model: type[Q]) -> Q:
    params = request.query_params
    for key in params:
        if len(params.getlist(key)) > 1:
            raise ApiError(400, "given more than once", key)
    try:
        query = model.model_validate(dict(params))
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    if query.cursor is not None and query.offset is not None:
        raise ApiError(400, "use either cursor or offset, not both", "offset")
    return query


def _json(model: BaseModel) -> Response:
    return Response(model.model_dump_json(), media_type="application/json")


async def _paged(lister: Callable[..., Awaitable[BaseModel]], query: Any) -> Response:
    """One page of a listing; a cursor we did not issue is a 400 naming ``cursor``."""
    try:
        page = await lister(query.filters(), limit=query.limit, cursor=query.cursor, offset=query.offset)
    except InvalidCursor as exc:
        raise ApiError(400, str(exc), "cursor") from None
    return _json(page)


class _Api:
    """Route handlers; they share the store, the bus and the health checks."""

    def __init__(
        self, store: Store, bus: EventBus, registry: CollectorRegistry, health: HealthCheck | None,
        flows: FlowCatalog | None = None,
    ) -> None:
        self.flows = flows
        self.store = store
        self.bus = bus
        self.registry = registry
        self.health = health
        self.openapi = build_openapi(_version())

    async def healthz(self, _request: Request) -> Response:
        body: dict[str, Any] = {}
        try:
            async with asyncio.timeout(DB_PING_TIMEOUT_S):
                await self.store.ping()
            body["db"] = {"ok": True, "backend": self.store.backend}
        except Exception as exc:
            logger.warning("health: database unreachable", exc_info=True)
            body["db"] = {"ok": False, "backend": self.store.backend, "error": type(exc).__name__}
        app_ok = True
        if self.health is not None:
            try:
                facts = dict(self.health())
                app_ok = facts.get("ok", True) is not False and facts.get("status", "ok") == "ok"
            except Exception:
                logger.exception("health: application health check raised")
                facts, app_ok = {"error": "health check raised"}, False
            body["app"] = facts
        ok = bool(body["db"]["ok"]) and app_ok
        return JSONResponse({"status": "ok" if ok else "unavailable", **body}, status_code=200 if ok else 503)

    async def metrics(self, _request: Request) -> Response:
        return Response(generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def openapi_json(self, _request: Request) -> Response:
        return JSONResponse(self.openapi)

    async def list_calls(self, request: Request) -> Response:
        query = _parse_query(request, CallQuery)
        return await _paged(self.store.calls.list_calls, query)

    async def get_call(self, request: Request) -> Response:
        call_id = request.path_params["call_id"]
        call = await self.store.calls.get_call(call_id)
        if call is None:
            return error_response(404, "no such call", "call_id")
        return _json(call)

    async def list_flows(self, _request: Request) -> Response:
        if self.flows is None:
            return _json(FlowList(items=[]))
        return _json(flow_list(self.flows))

    async def list_security_events(self, request: Request) -> Response:
        query = _parse_query(request, SecurityEventQuery)
        return await _paged(self.store.calls.list_security_events, query)


def create_app(
    store: Store,
    bus: EventBus,
    metrics_registry: CollectorRegistry,
    health: HealthCheck | None = None,
    *,
    flows: FlowCatalog | None = None,
    middleware: Sequence[Middleware] = (),
) -> Starlette:
    """The Starlette app. ``middleware`` is where authentication will plug in."""
    api = _Api(store, bus, metrics_registry, health, flows)
    routes = [
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        Route("/openapi.json", api.openapi_json, methods=["GET"]),
        Route("/api/calls", api.list_calls, methods=["GET"]),
        Route("/api/calls/{call_id}", api.get_call, methods=["GET"]),
        Route("/api/security-events", api.list_security_events, methods=["GET"]),
        Route("/api/flows", api.list_flows, methods=["GET"]),
    ]
    app = Starlette(routes=routes, middleware=list(middleware), exception_handlers=dict(EXCEPTION_HANDLERS))
    app.state.store = store
    app.state.bus = bus
    return app
