"""The HTTP API: health, Prometheus metrics, CDRs, call event logs, security events and bans, agents,
queues and routing explanations.

Every ``/api/*`` route needs a signed-in user (``helpline.web.auth``) and each checks the caller's role
(the role matrix in docs/recording-design.md). Binding (127.0.0.1 by default) is the server's job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from helpline.config import WebSection
from helpline.events.bus import EventBus
from helpline.queue.config import QueueConfig
from helpline.recording.library import RecordingLibrary
from helpline.store.store import Store
from helpline.web.agents import AgentRoutes
from helpline.web.auth import ADMIN_ONLY, READ_ROLES, Auth, AuthMiddleware, requires
from helpline.web.errors import EXCEPTION_HANDLERS, error_response
from helpline.web.flows import FlowCatalog, FlowList, flow_list
from helpline.web.openapi import build_openapi
from helpline.web.parsing import json_response, paged, parse_query
from helpline.web.queries import CallQuery, SecurityEventQuery
from helpline.web.queue_port import QueueView
from helpline.web.queues import QueueRoutes
from helpline.web.recordings import recording_routes
from helpline.web.security import SecurityRoutes
from helpline.web.ui_pages import ui_routes
from helpline.web.users import UserRoutes

logger = logging.getLogger(__name__)

HealthCheck = Callable[[], Mapping[str, Any]]
"""Returns JSON-able facts about the application, shown under ``app`` in /healthz. The application
counts as down (503) when they hold ``"ok": False`` or a ``"status"`` other than ``"ok"`` (e.g.
``"starting"``). Must not block."""

DB_PING_TIMEOUT_S = 2.0
DEFAULT_REALM = "helpline"


def _version() -> str:
    try:
        return version("helpline")
    except PackageNotFoundError:
        return "0.0.0+unknown"


class _Api:
    """Route handlers; they share the store, the bus and the health checks."""

    def __init__(
        self,
        store: Store,
        bus: EventBus,
        registry: CollectorRegistry,
        health: HealthCheck | None,
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
        query = parse_query(request, CallQuery)
        return await paged(self.store.calls.list_calls, query.filters(), query)

    async def get_call(self, request: Request) -> Response:
        call_id = request.path_params["call_id"]
        call = await self.store.calls.get_call(call_id)
        if call is None:
            return error_response(404, "no such call", "call_id")
        return json_response(call)

    async def list_flows(self, _request: Request) -> Response:
        if self.flows is None:
            return json_response(FlowList(items=[]))
        return json_response(flow_list(self.flows))

    async def list_security_events(self, request: Request) -> Response:
        query = parse_query(request, SecurityEventQuery)
        return await paged(self.store.calls.list_security_events, query.filters(), query)


def create_app(
    store: Store,
    bus: EventBus,
    metrics_registry: CollectorRegistry,
    health: HealthCheck | None = None,
    *,
    flows: FlowCatalog | None = None,
    queues: QueueView | None = None,
    queue_configs: Mapping[str, QueueConfig] | None = None,
    agent_realm: str = DEFAULT_REALM,
    web: WebSection | None = None,
    recordings: RecordingLibrary | None = None,
    middleware: Sequence[Middleware] = (),
) -> Starlette:
    """The Starlette app. ``web`` holds the sign-in settings (cookies, session lifetimes, rate limit);
    ``middleware`` runs outside the authentication middleware, which is always installed.

    ``queues`` is the running queue runtime (live views, presence); without it the agent endpoints
    still manage the stored agents. The queues agents may join are ``queues.queue_names()``, else the
    keys of ``queue_configs`` (the configuration's ``[queues]``). ``agent_realm`` is the SIP digest
    realm passwords are hashed under. ``recordings`` serves the recordings API (without it, only
    the reviewer UI's static pages are there).
    """
    api = _Api(store, bus, metrics_registry, health, flows)
    configs = dict(queue_configs or {})

    def queue_names() -> set[str]:
        return set(queues.queue_names()) if queues is not None else set(configs)

    agents = AgentRoutes(store, queues, queue_names, agent_realm)
    queue_routes = QueueRoutes(store, queues, configs, queue_names)
    auth = Auth(store, web)
    read, admin = requires(*READ_ROLES), requires(*ADMIN_ONLY)
    routes: list[BaseRoute] = [
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        Route("/openapi.json", api.openapi_json, methods=["GET"]),
        Route("/api/calls", read(api.list_calls), methods=["GET"]),
        Route("/api/calls/{call_id}", read(api.get_call), methods=["GET"]),
        Route("/api/calls/{call_id}/routing", read(queue_routes.call_routing), methods=["GET"]),
        Route("/api/security-events", read(api.list_security_events), methods=["GET"]),
        Route("/api/flows", read(api.list_flows), methods=["GET"]),
        Route("/api/agents", read(agents.list_agents), methods=["GET"]),
        Route("/api/agents", admin(agents.create_agent), methods=["POST"]),
        Route("/api/agents/{extension}", read(agents.get_agent), methods=["GET"]),
        Route("/api/agents/{extension}", admin(agents.update_agent), methods=["PATCH"]),
        Route("/api/agents/{extension}", admin(agents.delete_agent), methods=["DELETE"]),
        Route("/api/agents/{extension}/password", admin(agents.set_password), methods=["PUT"]),
        Route("/api/agents/{extension}/presence", agents.set_presence, methods=["PUT"]),
        Route("/api/agents/{extension}/events", read(agents.list_events), methods=["GET"]),
        Route("/api/queues", read(queue_routes.list_queues), methods=["GET"]),
        Route("/api/queues/{name}", read(queue_routes.get_queue), methods=["GET"]),
        Route("/api/queues/{name}/kpis", read(queue_routes.kpis), methods=["GET"]),
        *UserRoutes(store, auth).routes(),
        *SecurityRoutes(store).routes(),
        *(recording_routes(recordings) if recordings is not None else []),
        *ui_routes(),
    ]
    stack = [*middleware, Middleware(AuthMiddleware, auth=auth)]
    app = Starlette(routes=routes, middleware=stack, exception_handlers=dict(EXCEPTION_HANDLERS))
    app.state.auth = auth
    app.state.store = store
    app.state.bus = bus
    return app
