"""``/api/session``, ``/api/me``, ``/api/users`` and ``/api/audit``: signing in and out, managing the
people who sign in (admin), and reading the audit log (admin, compliance). Also the first-start
bootstrap that creates the ``admin`` user."""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from helpline.store.audit import AuditFilters, AuditRecord, canonical_json
from helpline.store.records import Page
from helpline.store.store import Store
from helpline.store.users import UserError, UserExists, UserNotFound, UserRecord
from helpline.web.auth import (
    ADMIN_ONLY,
    AUDIT_ROLES,
    MAX_PASSWORD_LENGTH,
    Auth,
    RateLimited,
    audit,
    current_principal,
    generate_password,
    hash_password,
    require_role,
)
from helpline.web.errors import ApiError
from helpline.web.parsing import json_response, paged, parse_body, parse_query
from helpline.web.queries import PageQuery, _as_utc

logger = logging.getLogger(__name__)

INITIAL_ADMIN = "admin"
INITIAL_PASSWORD_FILE = "initial-admin-password"
MIN_PASSWORD_LENGTH = 8
Role = Literal["admin", "supervisor", "agent", "compliance"]


class SignInBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(max_length=256)
    password: str = Field(max_length=MAX_PASSWORD_LENGTH)
    kind: Literal["browser", "api"] = Field(
        "browser", description="browser: cookies are set; api: a bearer token is returned instead"
    )


class SessionInfo(BaseModel):
    kind: str
    created_at: datetime
    expires_at: datetime


class SignInOut(BaseModel):
    user: UserRecord
    csrf: str | None = Field(description="Echo in X-CSRF-Token on unsafe methods (browser sessions)")
    token: str | None = Field(description="Bearer token; only when kind is api")
    session: SessionInfo


class MeOut(BaseModel):
    user: UserRecord
    session: SessionInfo


class UserList(BaseModel):
    items: list[UserRecord]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str
    role: Role
    display_name: str | None = Field(None, max_length=128)
    agent_extension: str | None = Field(None, max_length=32)
    password: str | None = Field(
        None, min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH,
        description="Omit to have a strong one generated and returned once",
    )  # fmt: skip


class UserCreated(BaseModel):
    user: UserRecord
    password: str | None = Field(description="The generated password, shown once; null if you gave one")


class UserPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role | None = None
    display_name: str | None = Field(None, max_length=128)
    agent_extension: str | None = Field(None, max_length=32)
    disabled: bool | None = None
    password: str | None = Field(None, min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH)


class AuditFilterQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    actor: str | None = Field(None, description="Username (or cli:<os user>), exact")
    action: str | None = Field(None, description="e.g. sign_in, role_change, play")
    target_type: str | None = None
    target_id: str | None = None
    outcome: Literal["ok", "denied", "failed"] | None = None
    since: datetime | None = Field(None, description="Entries at or after (ISO 8601; UTC if no offset)")
    until: datetime | None = Field(None, description="Entries before (ISO 8601; UTC if no offset)")

    _utc = field_validator("since", "until")(_as_utc)

    def filters(self) -> AuditFilters:
        return AuditFilters(
            actor=self.actor, action=self.action, target_type=self.target_type, target_id=self.target_id,
            outcome=self.outcome, since=self.since, until=self.until,
        )  # fmt: skip


class AuditQuery(PageQuery, AuditFilterQuery):
    pass


class AuditExportQuery(AuditFilterQuery):
    format: Literal["jsonl", "csv"] = "jsonl"


AuditPage = Page[AuditRecord]
CSV_COLUMNS = tuple(AuditRecord.model_fields)


def _session_info(principal_session: Any) -> SessionInfo:
    return SessionInfo(
        kind=principal_session.kind, created_at=principal_session.created_at,
        expires_at=principal_session.expires_at,
    )  # fmt: skip


def _user_error(exc: UserError) -> ApiError:
    if isinstance(exc, UserNotFound):
        return ApiError(404, exc.message, exc.field)
    if isinstance(exc, UserExists):
        return ApiError(409, exc.message, exc.field)
    return ApiError(422, exc.message, exc.field)


class UserRoutes:
    """Handlers of the session, user and audit endpoints."""

    def __init__(self, store: Store, auth: Auth) -> None:
        self.store = store
        self.auth = auth

    def routes(self) -> list[Route]:
        return [
            Route("/api/session", self.sign_in, methods=["POST"]),
            Route("/api/session", self.sign_out, methods=["DELETE"]),
            Route("/api/me", self.me, methods=["GET"]),
            Route("/api/users", self.list_users, methods=["GET"]),
            Route("/api/users", self.create_user, methods=["POST"]),
            Route("/api/users/{username}", self.update_user, methods=["PATCH"]),
            Route("/api/audit", self.list_audit, methods=["GET"]),
            Route("/api/audit/export", self.export_audit, methods=["GET"]),
        ]

    async def sign_in(self, request: Request) -> Response:
        body = await parse_body(request, SignInBody)
        try:
            signed_in = await self.auth.sign_in(request, body.username, body.password, body.kind)
        except RateLimited as exc:
            return JSONResponse(
                {"error": str(exc)}, status_code=429, headers={"Retry-After": str(exc.retry_after)}
            )
        out = SignInOut(
            user=signed_in.user.public(), csrf=signed_in.csrf if body.kind == "browser" else None,
            token=signed_in.token if body.kind == "api" else None, session=_session_info(signed_in.session),
        )  # fmt: skip
        response = json_response(out)
        if body.kind == "browser":
            self.auth.set_cookies(request, response, signed_in)
        return response

    async def sign_out(self, request: Request) -> Response:
        await self.auth.sign_out(request)
        response = Response(status_code=204)
        self.auth.clear_cookies(request, response)
        return response

    async def me(self, request: Request) -> Response:
        principal = current_principal(request)
        return json_response(MeOut(user=principal.user.public(), session=_session_info(principal.session)))

    async def list_users(self, request: Request) -> Response:
        await require_role(request, *ADMIN_ONLY)
        users = await self.store.users.list()
        return json_response(UserList(items=[u.public() for u in users]))

    async def create_user(self, request: Request) -> Response:
        await require_role(request, *ADMIN_ONLY)
        body = await parse_body(request, UserCreate)
        generated = generate_password() if body.password is None else None
        password_hash = await hash_password(body.password or generated or "")
        try:
            user = await self.store.users.create(
                body.username, body.role, password_hash, display_name=body.display_name,
                agent_extension=body.agent_extension,
            )  # fmt: skip
        except UserError as exc:
            raise _user_error(exc) from None
        await audit(request, "user_add", target_type="user", target_id=user.username,
                    detail={"role": user.role, "agent_extension": user.agent_extension})  # fmt: skip
        location = {"Location": f"/api/users/{user.username}"}
        return json_response(UserCreated(user=user.public(), password=generated), 201, location)

    async def update_user(self, request: Request) -> Response:
        await require_role(request, *ADMIN_ONLY)
        username = request.path_params["username"]
        body = await parse_body(request, UserPatch)
        given = body.model_fields_set
        for field in ("role", "display_name", "disabled"):
            if field in given and getattr(body, field) is None:
                raise ApiError(422, "must not be null", field)
        current = await self.store.users.get(username)
        if current is None:
            raise ApiError(404, f"no user {username!r}", "username")
        changes = {field: getattr(body, field) for field in given - {"password"}}
        loses_admin = current.role == "admin" and not current.disabled and (
            changes.get("role", "admin") != "admin" or changes.get("disabled") is True
        )
        if loses_admin and await self.store.users.count(role="admin", enabled_only=True) <= 1:
            field = "role" if "role" in changes else "disabled"
            raise ApiError(409, "that would leave no enabled admin", field)
        try:
            user = await self.store.users.update(username, changes) if changes else current
            if body.password is not None:
                user = await self.store.users.set_password_hash(username, await hash_password(body.password))
        except UserError as exc:
            raise _user_error(exc) from None
        await self._audit_changes(request, current.public(), user.public(), password="password" in given)
        keep = current_principal(request).session.id
        if user.disabled and not current.disabled:
            await self.auth.end_sessions(user, "user_disabled")
        elif body.password is not None:  # a role change needs nothing: roles are read on every request
            await self.auth.end_sessions(user, "password_changed", keep=keep)
        return json_response(user.public())

    async def _audit_changes(
        self, request: Request, before: UserRecord, after: UserRecord, *, password: bool
    ) -> None:
        name = after.username
        if before.role != after.role:
            await audit(request, "role_change", target_type="user", target_id=name,
                        detail={"from": before.role, "to": after.role})  # fmt: skip
        if before.disabled != after.disabled:
            action = "user_disable" if after.disabled else "user_enable"
            await audit(request, action, target_type="user", target_id=name)
        if password:
            await audit(request, "password_change", target_type="user", target_id=name)
        other = {
            field: getattr(after, field)
            for field in ("display_name", "agent_extension")
            if getattr(before, field) != getattr(after, field)
        }
        if other:
            await audit(request, "user_change", target_type="user", target_id=name, detail=other)

    async def list_audit(self, request: Request) -> Response:
        await require_role(request, *AUDIT_ROLES)
        query = parse_query(request, AuditQuery)
        response = await paged(self.store.audit.list, query.filters(), query)
        await audit(request, "audit_view", target_type="audit_log",
                    detail=query.model_dump(mode="json", exclude_none=True))  # fmt: skip
        return response

    async def export_audit(self, request: Request) -> Response:
        await require_role(request, *AUDIT_ROLES)
        query = parse_query(request, AuditExportQuery)
        await audit(request, "audit_export", target_type="audit_log",
                    detail=query.model_dump(mode="json", exclude_none=True))  # fmt: skip
        rows = self.store.audit.export(query.filters())
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        if query.format == "csv":
            body, media = _csv_lines(rows), "text/csv; charset=utf-8"
        else:
            body, media = _jsonl_lines(rows), "application/x-ndjson"
        disposition = f'attachment; filename="helpline-audit-{stamp}.{query.format}"'
        return StreamingResponse(body, media_type=media, headers={"Content-Disposition": disposition})


async def _jsonl_lines(rows: AsyncIterator[AuditRecord]) -> AsyncIterator[str]:
    async for row in rows:
        yield canonical_json(row.model_dump(mode="json")) + "\n"


async def _csv_lines(rows: AsyncIterator[AuditRecord]) -> AsyncIterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    async for row in rows:
        values = row.model_dump(mode="json")
        values["detail"] = canonical_json(values["detail"])
        writer.writerow(["" if values[c] is None else values[c] for c in CSV_COLUMNS])
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _write_secret(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only (0600 from the moment it exists)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


async def ensure_initial_admin(store: Store, data_dir: Path) -> Path | None:
    """On first start (no users at all) create ``admin`` with a random password written to
    ``<data_dir>/initial-admin-password`` (0600); returns that path, or None when users exist.
    The password is never logged."""
    if await store.users.count() > 0:
        return None
    password = generate_password()
    path = data_dir / INITIAL_PASSWORD_FILE
    try:
        user = await store.users.create(INITIAL_ADMIN, "admin", await hash_password(password),
                                        display_name="Administrator")  # fmt: skip
    except UserExists:  # another process bootstrapped at the same moment; its file is the one
        logger.info("initial admin created by another process")
        return None
    try:
        await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(_write_secret, path, password + "\n")
    except OSError:
        logger.error("cannot write %s; set a password with `helpline user passwd admin`", path)
        raise
    await store.audit.append("user_add", target_type="user", target_id=user.username,
                             detail={"role": "admin", "bootstrap": True})  # fmt: skip
    logger.warning(
        "no users existed: created user 'admin'; its password is in %s (readable by this account only)."
        " Sign in and change it, then delete the file.", path,
    )  # fmt: skip
    return path
