"""``/api/agents``: agents as stored (never their password hashes), merged with their live state when
the queue runtime is running; presence changes go to the runtime."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from helpline.queue.profile import AgentProfile
from helpline.store.agents import (
    MAX_PASSWORD_LENGTH,
    AgentError,
    AgentExists,
    AgentNotFound,
    InvalidAgent,
    check_password,
    validate_profile,
)
from helpline.store.records import AgentRecord, StoredAgent
from helpline.store.store import Store
from helpline.web.auth import PRESENCE_ROLES, require_self_or_role
from helpline.web.errors import ApiError
from helpline.web.parsing import json_object, json_response, paged, parse_body, parse_query
from helpline.web.queries import AgentEventQuery
from helpline.web.queue_port import QueueView

logger = logging.getLogger(__name__)

Password = Field(
    min_length=1, max_length=MAX_PASSWORD_LENGTH, description="SIP digest password; only its HA1s are stored"
)


class AgentOut(AgentRecord):
    live: dict[str, Any] | None = Field(
        description="Live state from the queue runtime (presence, activity, registrations); "
        "null when the runtime is not running or does not know the agent yet"
    )


class AgentList(BaseModel):
    items: list[AgentOut]


class AgentCreate(AgentProfile):
    """An agent profile plus its SIP password (the POST body's schema; the handler validates the
    profile part with ``validate_profile`` like every other writer)."""

    password: str = Password


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: str = Password


class PresenceChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    presence: Literal["ready", "not_ready", "logged_out"]
    reason: str | None = Field(None, max_length=200, description="Why, e.g. a not-ready reason code")


def _api_error(exc: AgentError) -> ApiError:
    if isinstance(exc, AgentNotFound):
        return ApiError(404, exc.message, exc.field)
    if isinstance(exc, AgentExists):
        return ApiError(409, exc.message, exc.field)
    return ApiError(422, exc.message, exc.field)


class AgentRoutes:
    """Handlers of the agent endpoints."""

    def __init__(
        self, store: Store, queues: QueueView | None, queue_names: Callable[[], Collection[str]], realm: str
    ) -> None:
        self.store = store
        self.queues = queues
        self.queue_names = queue_names
        self.realm = realm

    def _out(self, agent: StoredAgent, live: dict[str, Any] | None) -> AgentOut:
        return AgentOut(**agent.public().model_dump(), live=live)

    def _live(self, extension: str) -> dict[str, Any] | None:
        return None if self.queues is None else self.queues.agent(extension)

    async def _changed(self, extension: str) -> None:
        """Tell the runtime; the database is the truth, so a failure here is logged, not returned."""
        if self.queues is None:
            return
        try:
            await self.queues.agents_changed(extension)
        except Exception:
            logger.exception("queue runtime failed to reload an agent", extra={"extension": extension})

    async def _stored(self, extension: str) -> StoredAgent:
        agent = await self.store.agents.get(extension)
        if agent is None:
            raise ApiError(404, "no such agent", "extension")
        return agent

    async def list_agents(self, _request: Request) -> Response:
        agents = await self.store.agents.list()
        live: dict[str, dict[str, Any]] = {}
        if self.queues is not None:
            live = {str(state["extension"]): state for state in self.queues.agents() if "extension" in state}
        return json_response(AgentList(items=[self._out(a, live.get(a.extension)) for a in agents]))

    async def create_agent(self, request: Request) -> Response:
        body = await json_object(request)
        password = body.pop("password", None)
        try:
            profile = validate_profile(body)
            if password is None:
                raise InvalidAgent("required", "password")
            agent = await self.store.agents.create(
                profile, check_password(password), self.realm, queue_names=self.queue_names()
            )
        except AgentError as exc:
            raise _api_error(exc) from None
        await self._changed(agent.extension)
        location = {"Location": f"/api/agents/{agent.extension}"}
        return json_response(self._out(agent, self._live(agent.extension)), 201, location)

    async def get_agent(self, request: Request) -> Response:
        agent = await self._stored(request.path_params["extension"])
        return json_response(self._out(agent, self._live(agent.extension)))

    async def update_agent(self, request: Request) -> Response:
        extension = request.path_params["extension"]
        changes = await json_object(request)
        if changes.get("extension", extension) == extension:
            changes.pop("extension", None)
        try:
            agent = await self.store.agents.update(extension, changes, queue_names=self.queue_names())
        except AgentError as exc:
            raise _api_error(exc) from None
        await self._changed(extension)
        return json_response(self._out(agent, self._live(extension)))

    async def delete_agent(self, request: Request) -> Response:
        extension = request.path_params["extension"]
        try:
            await self.store.agents.delete(extension)
        except AgentError as exc:
            raise _api_error(exc) from None
        await self._changed(extension)
        return Response(status_code=204)

    async def set_password(self, request: Request) -> Response:
        extension = request.path_params["extension"]
        body = await parse_body(request, PasswordChange)
        try:
            await self.store.agents.set_password(extension, body.password, self.realm)
        except AgentError as exc:
            raise _api_error(exc) from None
        await self._changed(extension)
        return Response(status_code=204)

    async def set_presence(self, request: Request) -> Response:
        extension = request.path_params["extension"]
        await require_self_or_role(request, extension, *PRESENCE_ROLES)
        body = await parse_body(request, PresenceChange)
        await self._stored(extension)
        if self.queues is None:
            raise ApiError(503, "the queue runtime is not running")
        try:
            state = await self.queues.set_presence(extension, body.presence, body.reason)
        except LookupError:
            raise ApiError(409, "the queue runtime has not loaded this agent", "extension") from None
        except ValueError as exc:
            raise ApiError(409, str(exc), "presence") from None
        return JSONResponse(state)

    async def list_events(self, request: Request) -> Response:
        query = parse_query(request, AgentEventQuery)
        extension = request.path_params["extension"]
        return await paged(self.store.agents.list_events, query.filters(extension), query)
