"""People who sign in (``store.users``) and their sessions (``store.user_sessions``).

The repositories store what they are given: password hashing (argon2id) and the session policies
(idle timeout, concurrent sessions) live in ``helpline.web.auth``. A session is stored under the
SHA-256 of its secret token, so the table alone never lets anyone sign in.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from helpline.store.models import User, UserSession

logger = logging.getLogger(__name__)

Role = Literal["admin", "supervisor", "agent", "compliance"]
ROLES: tuple[Role, ...] = ("admin", "supervisor", "agent", "compliance")
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
SessionKind = Literal["browser", "api", "token"]
"""``browser``: cookie session from a sign-in; ``api``: bearer token from a sign-in; ``token``: a
long-lived bearer token an administrator issued (``helpline user token``)."""
SIGN_IN_KINDS: tuple[SessionKind, ...] = ("browser", "api")
_CHANGEABLE = frozenset({"display_name", "role", "agent_extension", "disabled"})


class UserError(Exception):
    """Base of the user repositories' refusals; ``field`` names the input at fault."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidUser(UserError, ValueError):
    """A username, role or other field is not acceptable."""


class UserExists(UserError):
    """Someone already has this username."""


class UserNotFound(UserError, LookupError):
    """No user has this username."""


class SessionRefused(UserError):
    """The user has a live session and the policy is ``refuse``."""


class UserRecord(BaseModel):
    """A user without credentials: what the API and the CLI show."""

    model_config = ConfigDict(frozen=True, from_attributes=True)

    username: str
    display_name: str
    role: str = Field(description="admin, supervisor, agent or compliance")
    agent_extension: str | None = Field(description="The agent this user is (role agent)")
    disabled: bool
    created_at: datetime
    updated_at: datetime
    password_changed_at: datetime


class StoredUser(UserRecord):
    """A user with its row id and password hash; never sent anywhere."""

    id: int
    password_hash: str

    def public(self) -> UserRecord:
        return UserRecord.model_validate(self.model_dump(exclude={"id", "password_hash"}))


class SessionRecord(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)

    id: str = Field(description="SHA-256 hex of the session's token")
    user_id: int
    kind: str
    csrf_token: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    client_ip: str | None
    user_agent: str | None


@dataclass(frozen=True, slots=True)
class OpenedSession:
    """A new session and the ids of the ones the ``end_first`` policy ended for it."""

    session: SessionRecord
    ended: list[str]


def check_username(username: object) -> str:
    if not isinstance(username, str) or not USERNAME.match(username):
        raise InvalidUser("1-64 letters, digits or . _ @ -, starting with a letter or digit", "username")
    return username


def check_role(role: object) -> Role:
    for known in ROLES:
        if role == known:
            return known
    raise InvalidUser(f"must be one of {', '.join(ROLES)}", "role")


def _check_text(value: object, field: str, length: int, *, optional: bool) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > length:
        raise InvalidUser(f"must be text of 1..{length} characters", field)
    return value


def _now() -> datetime:
    return datetime.now(UTC)


class UserRepository:
    """User CRUD; each call runs in its own short transaction."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def create(
        self,
        username: str,
        role: str,
        password_hash: str,
        *,
        display_name: str | None = None,
        agent_extension: str | None = None,
        disabled: bool = False,
    ) -> StoredUser:
        """Store a new user. Raises ``UserExists`` or ``InvalidUser`` naming the field."""
        now = _now()
        row = User(
            username=check_username(username), role=check_role(role), password_hash=password_hash,
            display_name=_check_text(display_name or username, "display_name", 128, optional=False),
            agent_extension=_check_text(agent_extension, "agent_extension", 32, optional=True),
            disabled=disabled, created_at=now, updated_at=now, password_changed_at=now,
        )  # fmt: skip
        try:
            async with self._sessions.begin() as session:
                session.add(row)
        except IntegrityError:
            raise UserExists(f"user {username!r} exists already", "username") from None
        logger.info("user created", extra={"username": username, "role": role})
        return StoredUser.model_validate(row)

    async def get(self, username: str) -> StoredUser | None:
        async with self._sessions() as session:
            row = await session.scalar(select(User).where(User.username == username))
            return None if row is None else StoredUser.model_validate(row)

    async def list(self) -> list[StoredUser]:
        """Every user, by username."""
        async with self._sessions() as session:
            rows = (await session.scalars(select(User).order_by(User.username))).all()
            return [StoredUser.model_validate(row) for row in rows]

    async def count(self, *, role: str | None = None, enabled_only: bool = False) -> int:
        query = select(func.count()).select_from(User)
        if role is not None:
            query = query.where(User.role == role)
        if enabled_only:
            query = query.where(User.disabled.is_(False))
        async with self._sessions() as session:
            return int(await session.scalar(query) or 0)

    async def update(self, username: str, changes: Mapping[str, Any]) -> StoredUser:
        """Change ``display_name``, ``role``, ``agent_extension`` and/or ``disabled``.

        Raises ``UserNotFound`` or ``InvalidUser`` (unknown field, bad value)."""
        values: dict[str, Any] = {}
        for key, value in changes.items():
            if key not in _CHANGEABLE:
                raise InvalidUser("unknown field" if key != "password" else "changed on its own", key)
            if key == "role":
                values[key] = check_role(value)
            elif key == "disabled":
                if not isinstance(value, bool):
                    raise InvalidUser("must be true or false", key)
                values[key] = value
            elif key == "display_name":
                values[key] = _check_text(value, key, 128, optional=False)
            else:
                values[key] = _check_text(value, key, 32, optional=True)
        return await self._change(username, values)

    async def set_password_hash(self, username: str, password_hash: str) -> StoredUser:
        """Replace the password hash. Raises ``UserNotFound``."""
        now = _now()
        return await self._change(username, {"password_hash": password_hash, "password_changed_at": now})

    async def _change(self, username: str, values: Mapping[str, Any]) -> StoredUser:
        async with self._sessions.begin() as session:
            row = await session.scalar(select(User).where(User.username == username).with_for_update())
            if row is None:
                raise UserNotFound(f"no user {username!r}", "username")
            for column, value in values.items():
                setattr(row, column, value)
            row.updated_at = _now()
            await session.flush()
            stored = StoredUser.model_validate(row)
        logger.info("user updated", extra={"username": username, "fields": sorted(values)})
        return stored


class SessionRepository:
    """Signed-in sessions; the web layer decides when one is too old or idle."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def open(
        self,
        user_id: int,
        kind: SessionKind,
        *,
        session_id: str,
        csrf_token: str,
        expires_at: datetime,
        client_ip: str | None = None,
        user_agent: str | None = None,
        concurrent: Literal["end_first", "refuse", "allow"] = "allow",
        idle_since: datetime | None = None,
    ) -> OpenedSession:
        """Store a new session. ``concurrent`` applies to the user's live sign-in sessions
        (``browser`` and ``api`` kinds; ones last seen before ``idle_since`` count as gone):
        ``end_first`` ends them, ``refuse`` raises ``SessionRefused``, ``allow`` leaves them."""
        now = _now()
        ended: list[str] = []
        async with self._sessions.begin() as session:
            if concurrent != "allow" and kind in SIGN_IN_KINDS:
                live = (
                    await session.scalars(
                        select(UserSession.id).where(
                            *_live(now, idle_since), UserSession.user_id == user_id,
                            UserSession.kind.in_(SIGN_IN_KINDS),
                        )
                    )
                ).all()  # fmt: skip
                if live and concurrent == "refuse":
                    raise SessionRefused("you are signed in elsewhere; sign out there first")
                ended = list(live)
                if ended:
                    await session.execute(
                        update(UserSession)
                        .where(UserSession.id.in_(ended))
                        .values(ended_at=now, end_reason="replaced")
                    )
            row = UserSession(
                id=session_id, user_id=user_id, kind=kind, csrf_token=csrf_token, created_at=now,
                last_seen_at=now, expires_at=expires_at, client_ip=client_ip,
                user_agent=None if user_agent is None else user_agent[:512],
            )  # fmt: skip
            session.add(row)
            await session.flush()
            record = SessionRecord.model_validate(row)
        return OpenedSession(record, ended)

    async def get(self, session_id: str) -> tuple[SessionRecord, StoredUser] | None:
        """The session (ended or not) and its user."""
        query = select(UserSession, User).join(User, User.id == UserSession.user_id)
        async with self._sessions() as session:
            found = (await session.execute(query.where(UserSession.id == session_id))).first()
        if found is None:
            return None
        return SessionRecord.model_validate(found[0]), StoredUser.model_validate(found[1])

    async def touch(self, session_id: str, at: datetime | None = None) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                update(UserSession).where(UserSession.id == session_id).values(last_seen_at=at or _now())
            )

    async def end(self, session_id: str, reason: str) -> bool:
        """End one live session; False when it had ended already."""
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(UserSession)
                .where(UserSession.id == session_id, UserSession.ended_at.is_(None))
                .values(ended_at=_now(), end_reason=reason)
            )
        return bool(getattr(result, "rowcount", 0))

    async def end_for_user(
        self, user_id: int, reason: str, *, kinds: Collection[str] | None = None, keep: str | None = None
    ) -> list[str]:
        """End every live session of a user (of ``kinds``, all when None) except ``keep``."""
        conditions: list[ColumnElement[bool]] = [
            UserSession.user_id == user_id, UserSession.ended_at.is_(None)
        ]
        if kinds is not None:
            conditions.append(UserSession.kind.in_(list(kinds)))
        if keep is not None:
            conditions.append(UserSession.id != keep)
        async with self._sessions.begin() as session:
            ids = list((await session.scalars(select(UserSession.id).where(*conditions))).all())
            if ids:
                ended = update(UserSession).where(UserSession.id.in_(ids))
                await session.execute(ended.values(ended_at=_now(), end_reason=reason))
        return ids

    async def live_for_user(self, user_id: int, *, idle_since: datetime | None = None) -> list[SessionRecord]:
        """The user's sessions that have not ended or expired, newest first."""
        query = (
            select(UserSession)
            .where(*_live(_now(), idle_since), UserSession.user_id == user_id)
            .order_by(UserSession.created_at.desc())
        )
        async with self._sessions() as session:
            return [SessionRecord.model_validate(row) for row in (await session.scalars(query)).all()]


def _live(now: datetime, idle_since: datetime | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [UserSession.ended_at.is_(None), UserSession.expires_at > now]
    if idle_since is not None:
        # Only browser sessions time out when idle; bearer tokens live until they expire.
        conditions.append(or_(UserSession.kind != "browser", UserSession.last_seen_at >= idle_since))
    return conditions
