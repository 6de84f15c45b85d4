"""Agents as the administrator manages them (API and CLI), and their call-less event log.

The password an admin sets is turned into digest HA1s (MD5 and SHA-256, under the realm) at once and
never stored. Every change goes through ``AgentProfile`` validation, so an agent in the table is always
one the routing engine accepts; problems are reported as ``InvalidAgent`` naming the field.

The running service and the CLI are separate processes writing the same table: the service polls
``changed_since`` to pick up what the CLI changed (the API tells the runtime directly).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from helpline.queue.profile import AgentProfile
from helpline.sbc_bridge.agents.ha1 import digest_ha1
from helpline.store.models import Agent, AgentEvent
from helpline.store.records import AgentEventRecord, Page, StoredAgent
from helpline.store.repository import fetch_page, time_window

logger = logging.getLogger(__name__)

MAX_PASSWORD_LENGTH = 256
CHANGE_POLL_SLACK = timedelta(seconds=2)
"""How far back ``AgentChanges.as_of`` reaches before the poll: a write whose transaction started
(and took its ``updated_at``) before the poll but committed after it is still seen by the next one."""

_PROFILE_FIELDS = frozenset(AgentProfile.model_fields) - {"extension"}


class AgentError(Exception):
    """Base of the agent repository's refusals; ``field`` names the input at fault when there is one."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidAgent(AgentError, ValueError):
    """The profile, a change or the password is not valid; ``field`` is e.g. ``skills`` or
    ``queues.0.queue``."""


class AgentExists(AgentError):
    """An agent with this extension exists already."""


class AgentNotFound(AgentError, LookupError):
    """No agent has this extension."""


@dataclass(frozen=True, slots=True)
class AgentEventFilters:
    extension: str | None = None
    type: str | None = None  # full type, e.g. "agent.presence"
    since: datetime | None = None  # at >= since
    until: datetime | None = None  # at < until


@dataclass(frozen=True, slots=True)
class AgentChanges:
    """What changed since a poll: agents to (re)load, extensions that are gone, and the ``since`` to
    pass next time. Delivery is at least once: an agent may come back unchanged (compare its
    ``updated_at`` with the one you hold)."""

    changed: list[StoredAgent]
    removed: frozenset[str]
    as_of: datetime


def _field(loc: Iterable[int | str]) -> str:
    return ".".join(str(part) for part in loc)


def validate_profile(values: Mapping[str, Any]) -> AgentProfile:
    """An ``AgentProfile`` from plain values, or ``InvalidAgent`` naming the first bad field."""
    try:
        return AgentProfile.model_validate(dict(values))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = _field(first["loc"]) or None
        message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
        raise InvalidAgent(message.removeprefix("Value error, "), field) from None


def check_queue_names(profile: AgentProfile, queue_names: Collection[str]) -> None:
    """Every membership must name a configured queue."""
    for index, membership in enumerate(profile.queues):
        if membership.queue not in queue_names:
            known = ", ".join(sorted(queue_names)) or "none configured"
            message = f"no queue named {membership.queue!r} (queues: {known})"
            raise InvalidAgent(message, f"queues.{index}.queue")


def check_password(password: object) -> str:
    if not isinstance(password, str):
        raise InvalidAgent("must be a string", "password")
    if not password:
        raise InvalidAgent("must not be empty", "password")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidAgent(f"longer than {MAX_PASSWORD_LENGTH} characters", "password")
    return password


def _ha1s(extension: str, realm: str, password: str) -> dict[str, str]:
    if not realm:
        raise InvalidAgent("must not be empty", "realm")
    return {
        "realm": realm,
        "ha1_md5": digest_ha1(extension, realm, password, "MD5"),
        "ha1_sha256": digest_ha1(extension, realm, password, "SHA-256"),
    }


def _columns(profile: AgentProfile) -> dict[str, Any]:
    """The table's columns for a profile (JSON columns as plain JSON types)."""
    values = profile.model_dump(mode="json")
    values["queues"] = list(values["queues"])
    return values


def _now() -> datetime:
    return datetime.now(UTC)


class AgentRepository:
    """Agent CRUD and the agent event log; each call runs in its own short transaction."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def create(
        self,
        profile: AgentProfile,
        password: str,
        realm: str,
        *,
        queue_names: Collection[str] | None = None,
    ) -> StoredAgent:
        """Store a new agent. ``queue_names``, when given, are the queues memberships may name.

        Raises ``AgentExists`` (field ``extension``) or ``InvalidAgent``.
        """
        if queue_names is not None:
            check_queue_names(profile, queue_names)
        now = _now()
        row = Agent(
            **_columns(profile), **_ha1s(profile.extension, realm, check_password(password)),
            created_at=now, updated_at=now,
        )  # fmt: skip
        try:
            async with self._sessions.begin() as session:
                session.add(row)
        except IntegrityError:
            raise AgentExists(f"agent {profile.extension!r} exists already", "extension") from None
        logger.info("agent created", extra={"extension": profile.extension})
        return StoredAgent.model_validate(row)

    async def get(self, extension: str) -> StoredAgent | None:
        async with self._sessions() as session:
            row = await session.get(Agent, extension)
            return None if row is None else StoredAgent.model_validate(row)

    async def list(self) -> list[StoredAgent]:
        """Every agent, by extension."""
        async with self._sessions() as session:
            rows = (await session.scalars(select(Agent).order_by(Agent.extension))).all()
            return [StoredAgent.model_validate(row) for row in rows]

    async def update(
        self,
        extension: str,
        changes: Mapping[str, Any],
        *,
        queue_names: Collection[str] | None = None,
    ) -> StoredAgent:
        """Change some profile fields (``display_name``, ``skills``, ``attributes``, ``queues``,
        ``wrapup_s``, ``enabled``); each given field replaces the stored value whole.

        Raises ``AgentNotFound`` or ``InvalidAgent`` (unknown field, ``extension``, bad value).
        """
        for key in changes:
            if key == "extension":
                raise InvalidAgent("an agent's extension cannot be changed", "extension")
            if key == "password":
                raise InvalidAgent("the password is changed on its own, not with other fields", "password")
            if key not in _PROFILE_FIELDS:
                raise InvalidAgent("unknown field", key)
        async with self._sessions.begin() as session:
            row = await session.get(Agent, extension, with_for_update=True)
            if row is None:
                raise AgentNotFound(f"no agent {extension!r}", "extension")
            current = StoredAgent.model_validate(row).profile().model_dump(mode="json")
            profile = validate_profile({**current, **changes})
            if queue_names is not None and "queues" in changes:
                check_queue_names(profile, queue_names)
            for column, value in _columns(profile).items():
                setattr(row, column, value)
            row.updated_at = _now()
            await session.flush()
            stored = StoredAgent.model_validate(row)
        logger.info("agent updated", extra={"extension": extension, "fields": sorted(changes)})
        return stored

    async def set_password(self, extension: str, password: str, realm: str) -> StoredAgent:
        """Replace the agent's HA1s (and realm). Raises ``AgentNotFound`` or ``InvalidAgent``."""
        credentials = _ha1s(extension, realm, check_password(password))
        async with self._sessions.begin() as session:
            row = await session.get(Agent, extension, with_for_update=True)
            if row is None:
                raise AgentNotFound(f"no agent {extension!r}", "extension")
            for column, value in credentials.items():
                setattr(row, column, value)
            row.updated_at = _now()
            await session.flush()
            stored = StoredAgent.model_validate(row)
        logger.info("agent password changed", extra={"extension": extension})
        return stored

    async def delete(self, extension: str) -> None:
        """Remove the agent (its event history stays). Raises ``AgentNotFound``."""
        async with self._sessions.begin() as session:
            result = await session.execute(delete(Agent).where(Agent.extension == extension))
            if not getattr(result, "rowcount", 0):
                raise AgentNotFound(f"no agent {extension!r}", "extension")
        logger.info("agent deleted", extra={"extension": extension})

    async def changed_since(self, since: datetime | None, known: Iterable[str] = ()) -> AgentChanges:
        """Agents created or updated at or after ``since`` (all of them when None), and which of the
        ``known`` extensions no longer exist. Pass ``as_of`` back as the next ``since``."""
        as_of = _now() - CHANGE_POLL_SLACK
        query = select(Agent).order_by(Agent.extension)
        if since is not None:
            query = query.where(Agent.updated_at >= since)
        async with self._sessions() as session:
            rows = (await session.scalars(query)).all()
            changed = [StoredAgent.model_validate(row) for row in rows]
            known = set(known)
            present: set[str] = set()
            if known:
                present = set((await session.scalars(select(Agent.extension))).all())
        return AgentChanges(changed=changed, removed=frozenset(known - present), as_of=as_of)

    async def latest_events(self, type: str) -> dict[str, AgentEventRecord]:
        """The newest event of ``type`` for each agent, by extension (what a restart restores)."""
        newest = (
            select(AgentEvent.extension, func.max(AgentEvent.id).label("id"))
            .where(AgentEvent.type == type, AgentEvent.extension.is_not(None))
            .group_by(AgentEvent.extension)
            .subquery()
        )
        query = select(AgentEvent).join(newest, AgentEvent.id == newest.c.id)
        async with self._sessions() as session:
            rows = (await session.scalars(query)).all()
        return {row.extension: AgentEventRecord.model_validate(row) for row in rows if row.extension}

    async def list_events(
        self,
        filters: AgentEventFilters = AgentEventFilters(),
        *,
        limit: int = 50,
        cursor: str | None = None,
        offset: int | None = None,
    ) -> Page[AgentEventRecord]:
        """Agent events matching ``filters``, newest first."""
        conditions: list[ColumnElement[bool]] = [
            column == value
            for column, value in ((AgentEvent.extension, filters.extension), (AgentEvent.type, filters.type))
            if value is not None
        ]
        conditions += time_window(AgentEvent.at, filters.since, filters.until)
        return await fetch_page(
            self._sessions, select(AgentEvent).where(*conditions), "agent_events", AgentEvent.at,
            AgentEvent.id, AgentEventRecord, limit=limit, cursor=cursor, offset=offset,
        )  # fmt: skip
