"""Who is asking: passwords (argon2id), sign-in and sign-out, cookie sessions with a CSRF check,
bearer tokens, the sign-in rate limit, and the role checks the route handlers make.

Every ``/api/*`` route needs a signed-in user except ``POST /api/session``; ``AuthMiddleware`` enforces
that before any handler runs and leaves the ``Principal`` in ``request.state.principal``. Handlers then
check roles with ``await require_role(request, "admin", ...)``, which audits a refusal.

Browsers get the ``helpline_session`` cookie (HttpOnly, SameSite=Strict) and a readable
``helpline_csrf`` cookie whose value they echo in ``X-CSRF-Token`` on unsafe methods (double submit;
the value must also match the one stored with the session). API clients send
``Authorization: Bearer <token>`` and need no CSRF token.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
import math
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy.exc import DBAPIError
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from helpline.config import WebSection
from helpline.store.audit import AuditRecord, Outcome
from helpline.store.store import Store
from helpline.store.users import SessionKind, SessionRecord, SessionRefused, StoredUser, check_username
from helpline.web.errors import ApiError, error_response

logger = logging.getLogger(__name__)

SESSION_COOKIE = "helpline_session"
CSRF_COOKIE = "helpline_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
READ_ROLES = ("admin", "supervisor", "compliance")
"""Calls, queues, flows, agents and security events (read)."""
ADMIN_ONLY = ("admin",)
AUDIT_ROLES = ("admin", "compliance")
PRESENCE_ROLES = ("admin", "supervisor")
"""Who may set any agent's presence; an ``agent`` user may set only their own."""
MAX_LIMITER_KEYS = 10_000
MAX_PASSWORD_LENGTH = 1024

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
Handler = Callable[[Request], Awaitable[Response]]


# ---- passwords and tokens ---------------------------------------------------------------------


async def hash_password(password: str) -> str:
    """The argon2id hash of ``password`` (in a thread: hashing takes tens of milliseconds)."""
    return await asyncio.to_thread(_hasher.hash, password)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except VerifyMismatchError:
        return False
    except (VerificationError, InvalidHashError):
        logger.warning("a stored password hash cannot be checked", exc_info=True)
        return False


async def verify_password(password_hash: str, password: str) -> bool:
    return await asyncio.to_thread(_verify, password_hash, password)


@functools.cache
def _decoy_hash() -> str:
    """Checked against when the username is unknown, so both cases take as long."""
    return _hasher.hash(secrets.token_urlsafe(16))


def generate_password() -> str:
    """A random password of about 144 bits, safe to paste."""
    return secrets.token_urlsafe(18)


def session_id(token: str) -> str:
    """What the database stores for a token: its SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()


def _new_token() -> tuple[str, str]:
    token = secrets.token_urlsafe(32)
    return token, session_id(token)


def client_ip(connection: HTTPConnection) -> str | None:
    return connection.client.host if connection.client else None


# ---- the failed sign-in limit -----------------------------------------------------------------


class LoginLimiter:
    """Counts failed sign-ins per key (``user:NAME``, ``ip:ADDR``) over a sliding window.

    In memory and bounded: beyond ``max_keys`` the least recently failing key is forgotten."""

    def __init__(
        self, max_failures: int, window_s: float, *, max_keys: int = MAX_LIMITER_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_keys = max_keys
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, *keys: str) -> int | None:
        """Whole seconds until a blocked key may try again, or None when none is blocked."""
        now = self._clock()
        waits = []
        for key in keys:
            times = self._recent(key, now)
            if times is not None and len(times) >= self.max_failures:
                waits.append(times[-self.max_failures] + self.window_s - now)
        return max(1, math.ceil(max(waits))) if waits else None

    def failed(self, *keys: str) -> None:
        now = self._clock()
        for key in keys:
            times = self._recent(key, now) or deque(maxlen=self.max_failures)
            times.append(now)
            self._failures[key] = times
            self._failures.move_to_end(key)
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)


# ---- who is signed in -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Principal:
    """The signed-in user of a request and the session it came with."""

    user: StoredUser
    session: SessionRecord

    @property
    def via_cookie(self) -> bool:
        return self.session.kind == "browser"


@dataclass(frozen=True, slots=True)
class SignedIn:
    user: StoredUser
    session: SessionRecord
    token: str
    csrf: str


class RateLimited(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed sign-ins; retry in {retry_after} s")
        self.retry_after = retry_after


class Auth:
    """Sign-in, sign-out and request authentication for one app (``app.state.auth``)."""

    def __init__(self, store: Store, settings: WebSection | None = None) -> None:
        self.store = store
        self.settings = settings or WebSection()
        self.limiter = LoginLimiter(self.settings.login_max_failures, self.settings.login_window_s)

    @property
    def idle(self) -> timedelta:
        return timedelta(minutes=self.settings.session_idle_minutes)

    @property
    def lifetime(self) -> timedelta:
        return timedelta(hours=self.settings.session_hours)

    @property
    def _touch_every(self) -> timedelta:
        return min(timedelta(seconds=60), self.idle / 4)

    def secure(self, connection: HTTPConnection) -> bool:
        return self.settings.secure_cookies or connection.url.scheme in ("https", "wss")

    async def sign_in(self, request: Request, username: str, password: str, kind: SessionKind) -> SignedIn:
        """Check the password and open a session. Raises ``RateLimited``, ``ApiError`` 401 (wrong
        username or password, or disabled: the caller is not told which) or 409 (``refuse`` policy)."""
        ip = client_ip(request)
        keys = (f"user:{username.casefold()}", f"ip:{ip}")
        audit = functools.partial(
            self.store.audit.append, "sign_in", actor=username[:64], target_type="user",
            target_id=username[:64], client_ip=ip,
        )  # fmt: skip
        wait = self.limiter.retry_after(*keys)
        if wait is not None:
            await audit(outcome="denied", detail={"reason": "rate_limited", "retry_after_s": wait})
            raise RateLimited(wait)
        try:
            user = await self.store.users.get(check_username(username))
        except ValueError:
            user = None
        matches = await verify_password(user.password_hash if user else _decoy_hash(), password)
        if user is None or not matches or user.disabled:
            self.limiter.failed(*keys)
            reason = "unknown_user" if user is None else "wrong_password" if not matches else "disabled"
            await audit(outcome="failed", role=user.role if user else None, detail={"reason": reason})
            raise ApiError(401, "wrong username or password")
        self.limiter.forget(keys[0])
        if _hasher.check_needs_rehash(user.password_hash):
            await self.store.users.set_password_hash(user.username, await hash_password(password))
        token, sid = _new_token()
        csrf = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        try:
            opened = await self.store.user_sessions.open(
                user.id, kind, session_id=sid, csrf_token=csrf, expires_at=now + self.lifetime,
                client_ip=ip, user_agent=request.headers.get("user-agent"),
                concurrent=self.settings.concurrent_sessions, idle_since=now - self.idle,
            )  # fmt: skip
        except SessionRefused as exc:
            await audit(outcome="denied", role=user.role, detail={"reason": "concurrent_session"})
            raise ApiError(409, exc.message) from None
        for ended in opened.ended:
            await self._audit_end(user, ended, "replaced", ip)
        await audit(outcome="ok", role=user.role, detail={"kind": kind})
        return SignedIn(user, opened.session, token, csrf)

    async def sign_out(self, request: Request) -> None:
        principal = current_principal(request)
        await self.store.user_sessions.end(principal.session.id, "signed_out")
        await audit(request, "sign_out", target_type="user", target_id=principal.user.username)

    async def _audit_end(self, user: StoredUser, sid: str, reason: str, ip: str | None) -> None:
        await self.store.audit.append(
            "session_end", actor=user.username, role=user.role, target_type="session", target_id=sid[:16],
            client_ip=ip, detail={"reason": reason},
        )  # fmt: skip

    async def end_sessions(self, user: StoredUser, reason: str, *, keep: str | None = None) -> int:
        """End every session of ``user`` (e.g. disabled, password changed), each audited."""
        ended = await self.store.user_sessions.end_for_user(user.id, reason, keep=keep)
        for sid in ended:
            await self._audit_end(user, sid, reason, None)
        return len(ended)

    async def authenticate(self, connection: HTTPConnection) -> Principal | Response:
        """The request's principal, or the 401/403 response to send instead."""
        bearer = _bearer(connection.headers.get("authorization"))
        kinds: tuple[str, ...]
        if bearer is not None:
            token, kinds = bearer, ("api", "token")
        else:
            token, kinds = connection.cookies.get(SESSION_COOKIE) or "", ("browser",)
        if not token:
            return _unauthorized("sign in first (POST /api/session) or send a bearer token")
        found = await self.store.user_sessions.get(session_id(token))
        if found is None or found[0].kind not in kinds:
            return _unauthorized("unknown or revoked session")
        session, user = found
        now = datetime.now(UTC)
        if session.ended_at is not None:
            return _unauthorized(f"session ended ({session.end_reason or 'signed out'})")
        expired = "expired" if session.expires_at <= now else None
        if session.kind == "browser" and session.last_seen_at + self.idle <= now:
            expired = expired or "idle"
        if user.disabled:
            expired = "user_disabled"
        if expired is not None:
            if await self.store.user_sessions.end(session.id, expired):
                await self._audit_end(user, session.id, expired, client_ip(connection))
            return _unauthorized(f"session ended ({expired})")
        if bearer is None and connection.scope.get("method", "GET") not in SAFE_METHODS:
            header = connection.headers.get(CSRF_HEADER, "")
            cookie = connection.cookies.get(CSRF_COOKIE, "")
            if not (header and _same(header, cookie) and _same(header, session.csrf_token)):
                return error_response(403, f"missing or wrong {CSRF_HEADER} header", CSRF_HEADER)
        if now - session.last_seen_at >= self._touch_every:
            await self.store.user_sessions.touch(session.id, now)
        return Principal(user, session)

    async def issue_token(
        self, user: StoredUser, lifetime: timedelta, *, actor: str | None, actor_role: str | None = None,
        client: str | None = None,
    ) -> str:  # fmt: skip
        """A long-lived bearer token for ``user`` (kind ``token``; no idle timeout, not counted by
        the concurrent-session policy). Returned once; only its hash is stored. Audited."""
        token, sid = _new_token()
        expires = datetime.now(UTC) + lifetime
        await self.store.user_sessions.open(
            user.id, "token", session_id=sid, csrf_token=secrets.token_urlsafe(32), expires_at=expires,
            client_ip=client, user_agent="issued token",
        )  # fmt: skip
        await self.store.audit.append(
            "token_issue", actor=actor, role=actor_role, target_type="user", target_id=user.username,
            client_ip=client, detail={"expires_at": expires.isoformat(), "session": sid[:16]},
        )  # fmt: skip
        return token

    def set_cookies(self, request: Request, response: Response, signed_in: SignedIn) -> None:
        secure = self.secure(request)
        max_age = int(self.lifetime.total_seconds())
        response.set_cookie(
            SESSION_COOKIE, signed_in.token, max_age=max_age, path="/", secure=secure, httponly=True,
            samesite="strict",
        )  # fmt: skip
        response.set_cookie(
            CSRF_COOKIE, signed_in.csrf, max_age=max_age, path="/", secure=secure, httponly=False,
            samesite="strict",
        )  # fmt: skip

    def clear_cookies(self, request: Request, response: Response) -> None:
        secure = self.secure(request)
        for name, httponly in ((SESSION_COOKIE, True), (CSRF_COOKIE, False)):
            response.delete_cookie(name, path="/", secure=secure, httponly=httponly, samesite="strict")


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _unauthorized(message: str) -> Response:
    return JSONResponse({"error": message}, status_code=401, headers={"WWW-Authenticate": "Bearer"})


def needs_sign_in(method: str, path: str) -> bool:
    """``/api/*`` needs a signed-in user, except signing in. ``/healthz``, ``/metrics``,
    ``/openapi.json`` and the static UI under ``/ui/`` (its pages call the API) do not."""
    if path != "/api" and not path.startswith("/api/"):
        return False
    return not (path == "/api/session" and method == "POST")


class AuthMiddleware:
    """Refuses requests that need a signed-in user and have none (401), or that come with a session
    cookie on an unsafe method without the CSRF token (403). Plain ASGI, so it adds no task per
    request."""

    def __init__(self, app: ASGIApp, auth: Auth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not needs_sign_in(
            scope.get("method", "GET"), scope["path"]
        ):
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        try:
            result = await self.auth.authenticate(connection)
        except (DBAPIError, OSError):
            logger.error("cannot check a session: database error", exc_info=True)
            result = error_response(503, "database unavailable")
        if isinstance(result, Response):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            else:
                await result(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = result
        await self.app(scope, receive, send)


# ---- what route handlers call -----------------------------------------------------------------


def current_principal(request: Request) -> Principal:
    """The signed-in principal; a 401 when the route was reached without one."""
    principal = request.scope.get("state", {}).get("principal")
    if not isinstance(principal, Principal):
        raise ApiError(401, "sign in first")
    return principal


def current_user(request: Request) -> StoredUser:
    return current_principal(request).user


async def audit(
    request: Request,
    action: str,
    *,
    target_type: str | None = None,
    target_id: str | None = None,
    outcome: Outcome = "ok",
    detail: Mapping[str, Any] | None = None,
) -> AuditRecord:
    """Append an audit entry for the request's user (actor, role and client address filled in)."""
    principal = request.scope.get("state", {}).get("principal")
    user = principal.user if isinstance(principal, Principal) else None
    store: Store = request.app.state.store
    return await store.audit.append(
        action, actor=user.username if user else None, role=user.role if user else None,
        target_type=target_type, target_id=target_id, outcome=outcome, client_ip=client_ip(request),
        detail=detail,
    )  # fmt: skip


async def deny(request: Request, needed: str) -> NoReturn:
    """Audit the refusal and raise the 403 that names what was ``needed``."""
    user = current_user(request)
    await audit(
        request, "access_denied", target_type="route", target_id=request.url.path, outcome="denied",
        detail={"method": request.method, "path": request.url.path, "needed": needed},
    )  # fmt: skip
    raise ApiError(403, f"this needs {needed} (you are {user.role})")


def _roles_text(roles: tuple[str, ...]) -> str:
    names = " or ".join(roles)
    return f"the role {names}"


async def require_role(request: Request, *roles: str) -> StoredUser:
    """The signed-in user if their role is one of ``roles``; otherwise the refusal is audited and a
    403 ``{"error": "this needs the role admin or compliance (you are agent)"}`` raised."""
    user = current_user(request)
    if user.role not in roles:
        await deny(request, _roles_text(roles))
    return user


async def require_self_or_role(request: Request, extension: str, *roles: str) -> StoredUser:
    """Like ``require_role``, but an ``agent`` user whose ``agent_extension`` is ``extension`` also
    passes (their own agent)."""
    user = current_user(request)
    if user.role in roles or (user.role == "agent" and user.agent_extension == extension):
        return user
    await deny(request, f"{_roles_text(roles)}, or to be agent {extension}")


def requires(*roles: str) -> Callable[[Handler], Handler]:
    """Wrap a route handler so only ``roles`` reach it (``Route(path, requires("admin")(handler))``)."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(request: Request) -> Response:
            await require_role(request, *roles)
            return await handler(request)

        return guarded

    return wrap

