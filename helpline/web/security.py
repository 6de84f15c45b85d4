"""``/api/security/bans``: the SIP edge's bans and locks, and lifting one.

The routes act on the ``bans`` table only; the running service polls it every second and applies what
changed to its guard, so the API and the CLI lift bans the same way. Admins and supervisors may look;
only an admin may lift, and every lift is audited with the key and the ban's reason.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from helpline.store.bans import BanRecord, ban_key
from helpline.store.store import Store
from helpline.web.auth import ADMIN_ONLY, audit, require_role
from helpline.web.errors import ApiError
from helpline.web.parsing import json_response, parse_query

BAN_READ_ROLES = ("admin", "supervisor")
BAN_LIFT_ROLES = ADMIN_ONLY


class BanQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    all: bool = Field(False, description="true: also the lifted and expired bans")


class BanList(BaseModel):
    items: list[BanRecord] = Field(description="Newest first")


class SecurityRoutes:
    """Handlers of the ban endpoints."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def routes(self) -> list[Route]:
        return [
            Route("/api/security/bans", self.list_bans, methods=["GET"]),
            Route("/api/security/bans/{key}", self.lift_ban, methods=["DELETE"]),
        ]

    async def list_bans(self, request: Request) -> Response:
        await require_role(request, *BAN_READ_ROLES)
        query = parse_query(request, BanQuery)
        return json_response(BanList(items=list(await self.store.bans.list(all=query.all))))

    async def lift_ban(self, request: Request) -> Response:
        user = await require_role(request, *BAN_LIFT_ROLES)
        key = ban_key(request.path_params["key"])
        ban = await self.store.bans.get(key)
        if ban is None or not await self.store.bans.lift(key, user.username):
            raise ApiError(404, f"no active ban or lock for {key!r}", "key")
        detail = {"kind": ban.kind, "reason": ban.reason, "since": ban.since.isoformat()}
        await audit(request, "unban", target_type="ban", target_id=key, detail=detail)
        lifted = await self.store.bans.get(key)
        return json_response(lifted or ban)
