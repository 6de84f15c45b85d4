"""The OpenAPI 3.1 document, built from the same pydantic models that validate queries and bodies and
shape responses, so it cannot drift from what the endpoints do.

Who may call what is stated once per operation: ``x-roles`` lists the roles allowed (taken from the
same role tuples the handlers pass to ``require_role``), an operation without it is open to any
signed-in user, and ``security: []`` marks the few that need no sign-in at all. The 401/403/503
answers every guarded operation shares are added from those facts, not written out per path.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from helpline.store.audit import AuditRecord
from helpline.store.bans import BanRecord
from helpline.store.recordings import RecordingRow, RetentionRow
from helpline.store.records import AgentEventRecord, CallDetail, CallRecord, Page, SecurityEventRecord
from helpline.store.users import UserRecord
from helpline.web.agents import AgentCreate, AgentList, AgentOut, PasswordChange, PresenceChange
from helpline.web.auth import (
    ADMIN_ONLY,
    AUDIT_ROLES,
    CSRF_COOKIE,
    CSRF_HEADER,
    PRESENCE_ROLES,
    READ_ROLES,
    SESSION_COOKIE,
)
from helpline.web.errors import ErrorBody
from helpline.web.flows import FlowList
from helpline.web.queries import AgentEventQuery, CallQuery, KpiQuery, RoutingQuery, SecurityEventQuery
from helpline.web.queues import KpiReport, QueueList
from helpline.web.recordings import (
    POLICY_WRITE_ROLES,
    REVIEW_ROLES,
    ErasureReport,
    ErasureRequest,
    ExportRequest,
    PlayRequest,
    PlayTicketOut,
    ReasonBody,
    RecordingOut,
    RecordingQuery,
    RetentionChange,
    RetentionList,
)
from helpline.web.routing import RoutingReport
from helpline.web.security import BAN_LIFT_ROLES, BAN_READ_ROLES, BanList, BanQuery
from helpline.web.users import (
    AuditExportQuery,
    AuditPage,
    AuditQuery,
    MeOut,
    SignInBody,
    SignInOut,
    UserCreate,
    UserCreated,
    UserList,
    UserPatch,
)

_REF = "#/components/schemas/{model}"
UNSAFE_METHODS = frozenset({"post", "put", "patch", "delete"})
SECURITY_SCHEMES: dict[str, Any] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "Authorization: Bearer <token> (POST /api/session with kind=api, or an issued "
        "token). No CSRF token is needed.",
    },
    "session": {
        "type": "apiKey",
        "in": "cookie",
        "name": SESSION_COOKIE,
        "description": f"The browser session cookie set by POST /api/session. Unsafe methods (POST, PUT, "
        f"PATCH, DELETE) also need the {CSRF_HEADER} header equal to the {CSRF_COOKIE} cookie.",
    },
}
PUBLIC: list[dict[str, list[str]]] = []
"""``security`` of an operation that needs no sign-in."""

_STRING = {"type": "string"}


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description}
    response["content"] = {"application/json": {"schema": schema}}
    if headers:
        response["headers"] = headers
    return response


def _header(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "schema": schema or _STRING}


def _binary(media_type: str, description: str, headers: dict[str, Any]) -> dict[str, Any]:
    schema = {"type": "string", "contentMediaType": media_type}
    return {"description": description, "headers": headers, "content": {media_type: {"schema": schema}}}


def _parameters(query_schema: dict[str, Any], model: type[BaseModel]) -> list[dict[str, Any]]:
    params = []
    for name, schema in query_schema["properties"].items():
        field = model.model_fields[name]
        param: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": schema}
        if field.description:
            param["description"] = field.description
            schema.pop("description", None)
        params.append(param)
    return params


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _body(ref: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": ref}}}


def _patch_schema(create: dict[str, Any]) -> dict[str, Any]:
    """PATCH takes any subset of the profile fields except the extension (and no password)."""
    schema = copy.deepcopy(create)
    for name in ("extension", "password"):
        schema["properties"].pop(name)
    schema.pop("required", None)
    schema["title"] = "AgentPatch"
    schema["description"] = "Profile fields to replace; each one given replaces the stored value whole."
    return schema


def _op(
    op_id: str,
    summary: str,
    responses: dict[str, Any],
    *,
    roles: Sequence[str] | None = None,
    public: bool = False,
    description: str = "",
    parameters: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One operation. ``roles``: who may call it (None: any signed-in user); ``public``: no sign-in."""
    op: dict[str, Any] = {"operationId": op_id, "summary": summary}
    if public:
        who = "No sign-in needed."
        op["security"] = PUBLIC
    elif roles is None:
        who = "Any signed-in user."
    else:
        who = f"Roles: {', '.join(roles)}."
        op["x-roles"] = list(roles)
    op["description"] = f"{who} {description}".strip()
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = body
    op["responses"] = responses
    return op


def _add_access_errors(paths: dict[str, Any], error: dict[str, Any]) -> None:
    """The 401, 403 and 503 every guarded operation can answer, from its method and ``x-roles``."""
    unauthorized = _json(error, "Not signed in, or the session or token is unknown, expired or ended",
                         {"WWW-Authenticate": _header("Bearer")})  # fmt: skip
    unavailable = _json(error, "The database is unavailable")
    for item in paths.values():
        for method, op in item.items():
            if method == "parameters" or op.get("security") == PUBLIC:
                continue
            responses = op["responses"]
            reasons = []
            if "x-roles" in op:
                reasons.append("the user's role is not allowed (the refusal is audited)")
            if method in UNSAFE_METHODS:
                reasons.append(f"signed in by cookie without a matching {CSRF_HEADER} header")
            if reasons and "403" not in responses:
                responses["403"] = _json(error, "Forbidden: " + "; or ".join(reasons))
            responses.setdefault("401", unauthorized)
            responses.setdefault("503", unavailable)
            op["responses"] = dict(sorted(responses.items()))


class _Schemas:
    """The components' schemas and references into them."""

    def __init__(self, serialized: Sequence[type[BaseModel]], bodies: Sequence[type[BaseModel]],
                 queries: Sequence[type[BaseModel]]) -> None:  # fmt: skip
        models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
            *((model, "serialization") for model in serialized),
            *((model, "validation") for model in (*bodies, *queries)),
        ]
        self._refs, top = models_json_schema(models, ref_template=_REF)
        self.schemas: dict[str, Any] = top.get("$defs", {})
        # Query models become parameter lists, not schemas of their own.
        self.queries = {
            model: _parameters(self.schemas.pop(self.name(model, "validation")), model) for model in queries
        }

    def name(self, model: type[BaseModel], mode: JsonSchemaMode) -> str:
        name: str = self._refs[(model, mode)]["$ref"].rsplit("/", 1)[1]
        return name

    def ref(self, model: type[BaseModel]) -> dict[str, Any]:
        return self._refs[(model, "serialization")]

    def body(self, model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
        return _body(self._refs[(model, "validation")], required=required)

    def json(
        self, model: type[BaseModel], description: str, headers: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return _json(self.ref(model), description, headers)


CallPage = Page[CallRecord]
SecurityEventPage = Page[SecurityEventRecord]
AgentEventPage = Page[AgentEventRecord]
RecordingPage = Page[RecordingRow]
_SERIALIZED: list[type[BaseModel]] = [
    CallPage, CallDetail, SecurityEventPage, ErrorBody, FlowList, AgentList, AgentOut, AgentEventPage,
    QueueList, KpiReport, RoutingReport, SignInOut, MeOut, UserList, UserCreated, UserRecord, AuditPage,
    AuditRecord, RecordingPage, RecordingOut, RecordingRow, PlayTicketOut, RetentionList, RetentionRow,
    ErasureReport, BanList, BanRecord,
]  # fmt: skip
_BODIES: list[type[BaseModel]] = [
    AgentCreate, PasswordChange, PresenceChange, SignInBody, UserCreate, UserPatch, PlayRequest, ReasonBody,
    ExportRequest, ErasureRequest, RetentionChange,
]  # fmt: skip
_QUERIES: list[type[BaseModel]] = [
    CallQuery, SecurityEventQuery, AgentEventQuery, KpiQuery, RoutingQuery, AuditQuery, AuditExportQuery,
    RecordingQuery, BanQuery,
]  # fmt: skip


def build_openapi(version: str) -> dict[str, Any]:
    s = _Schemas(_SERIALIZED, _BODIES, _QUERIES)
    create_name = s.name(AgentCreate, "validation")
    s.schemas["AgentPatch"] = _patch_schema(s.schemas[create_name])
    error = s.ref(ErrorBody)
    paths = {
        **_core_paths(s, error), **_security_paths(s, error), **_user_paths(s, error),
        **_recording_paths(s, error),
    }  # fmt: skip
    _add_access_errors(paths, error)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Helpline API",
            "version": version,
            "description": "Call detail records, call event logs, security events and bans, agents, queues, "
            "routing decisions, users and the audit log, and call recordings. Times: ISO 8601 UTC. Errors: "
            "{error, field}. Sign in with POST /api/session.",
        },
        "security": [{"bearer": []}, {"session": []}],
        "paths": paths,
        "components": {"schemas": s.schemas, "securitySchemes": SECURITY_SCHEMES},
    }


def _core_paths(s: _Schemas, error: dict[str, Any]) -> dict[str, Any]:
    """Health, metrics, this document, calls, security events, flows, agents and queues."""
    queries = s.queries
    bad_request = _json(error, "A query parameter is invalid; `field` names it")
    not_json = _json(error, "The body is not a JSON object")
    invalid = _json(error, "A field of the body is invalid; `field` names it (e.g. queues.0.queue)")
    no_agent = _json(error, "No such agent")
    no_queue = _json(error, "No such queue")
    any_object = {"type": "object", "additionalProperties": True}
    done = {"description": "Done"}
    health = {"schema": {"type": "object"}}
    return {
        "/healthz": {
            "get": _op("health", "Liveness and dependency status", {
                "200": {"description": "All dependencies are up", "content": {"application/json": health}},
                "503": {"description": "A dependency is down", "content": {"application/json": health}},
            }, public=True),
        },
        "/metrics": {
            "get": _op("metrics", "Prometheus metrics", {
                "200": {"description": "Prometheus text exposition format",
                        "content": {"text/plain": {"schema": _STRING}}},
            }, public=True),
        },
        "/openapi.json": {
            "get": _op("openapi", "This document", {
                "200": _json({"type": "object"}, "The OpenAPI 3.1 document"),
            }, public=True),
        },
        "/api/calls": {
            "get": _op("listCalls", "Calls, newest first", {
                "200": s.json(CallPage, "A page of calls"), "400": bad_request,
            }, roles=READ_ROLES, parameters=queries[CallQuery]),
        },
        "/api/calls/{call_id}": {
            "get": _op("getCall", "One call with its events in order", {
                "200": s.json(CallDetail, "The call"), "404": _json(error, "No such call"),
            }, roles=READ_ROLES, parameters=[_path_param("call_id")]),
        },
        "/api/calls/{call_id}/routing": {
            "get": _op("getCallRouting",
                       "The call's routing decisions; with agent=EXT, why that agent was not chosen", {
                "200": s.json(RoutingReport, "Decisions in order"), "400": bad_request,
                "404": _json(error, "No such call"),
            }, roles=READ_ROLES, parameters=[_path_param("call_id"), *queries[RoutingQuery]]),
        },
        "/api/security-events": {
            "get": _op("listSecurityEvents", "Security events, newest first", {
                "200": s.json(SecurityEventPage, "A page of security events"), "400": bad_request,
            }, roles=READ_ROLES, parameters=queries[SecurityEventQuery]),
        },
        "/api/flows": {
            "get": _op("listFlows", "Flows in service and rejected flow files", {
                "200": s.json(FlowList, "Every flow file the registry knows"),
            }, roles=READ_ROLES),
        },
        "/api/agents": {
            "get": _op("listAgents", "Every agent, by extension, with its live state", {
                "200": s.json(AgentList, "The agents"),
            }, roles=READ_ROLES),
            "post": _op("createAgent", "Add an agent (its password is stored as digest HA1s only)", {
                "201": s.json(AgentOut, "The new agent"), "400": not_json,
                "409": _json(error, "An agent with this extension exists"), "422": invalid,
            }, roles=ADMIN_ONLY, body=s.body(AgentCreate)),
        },
        "/api/agents/{extension}": {
            "parameters": [_path_param("extension")],
            "get": _op("getAgent", "One agent with its live state", {
                "200": s.json(AgentOut, "The agent"), "404": no_agent,
            }, roles=READ_ROLES),
            "patch": _op("updateAgent", "Change some of an agent's profile fields", {
                "200": s.json(AgentOut, "The updated agent"), "400": not_json, "404": no_agent,
                "422": invalid,
            }, roles=ADMIN_ONLY, body=_body({"$ref": _REF.format(model="AgentPatch")})),
            "delete": _op("deleteAgent", "Remove an agent (its event history stays)", {
                "204": done, "404": no_agent,
            }, roles=ADMIN_ONLY),
        },
        "/api/agents/{extension}/password": {
            "put": _op("setAgentPassword", "Set an agent's SIP password", {
                "204": done, "400": not_json, "404": no_agent, "422": invalid,
            }, roles=ADMIN_ONLY, parameters=[_path_param("extension")], body=s.body(PasswordChange)),
        },
        "/api/agents/{extension}/presence": {
            "put": _op("setAgentPresence", "Log an agent in or out, ready or not ready", {
                "200": _json(any_object, "The agent's live state after the change"), "400": not_json,
                "404": no_agent, "409": _json(error, "The queue runtime refused the change"),
                "422": invalid,
                "503": _json(error, "The queue runtime is not running, or the database is down"),
            }, roles=PRESENCE_ROLES, parameters=[_path_param("extension")], body=s.body(PresenceChange),
               description="Also a user of role agent whose agent_extension is this extension."),
        },
        "/api/agents/{extension}/events": {
            "get": _op("listAgentEvents", "An agent's call-less events (presence, reachability...)", {
                "200": s.json(AgentEventPage, "A page of agent events"), "400": bad_request,
            }, roles=READ_ROLES, parameters=[_path_param("extension"), *queries[AgentEventQuery]]),
        },
        "/api/queues": {
            "get": _op("listQueues", "Live view of every queue (empty without the queue runtime)", {
                "200": s.json(QueueList, "The queues"),
            }, roles=READ_ROLES),
        },
        "/api/queues/{name}": {
            "get": _op("getQueue", "Live view of one queue", {
                "200": _json(any_object, "The queue"), "404": no_queue,
            }, roles=READ_ROLES, parameters=[_path_param("name")]),
        },
        "/api/queues/{name}/kpis": {
            "get": _op("getQueueKpis", "Service level, ASA, AHT, abandonment, occupancy over a window", {
                "200": s.json(KpiReport, "The queue's KPIs"), "400": bad_request, "404": no_queue,
            }, roles=READ_ROLES, parameters=[_path_param("name"), *queries[KpiQuery]]),
        },
    }  # fmt: skip


def _security_paths(s: _Schemas, error: dict[str, Any]) -> dict[str, Any]:
    """The SIP edge's bans and locks."""
    return {
        "/api/security/bans": {
            "get": _op("listBans", "The SIP edge's bans (sources) and locks (extensions), newest first", {
                "200": s.json(BanList, "The bans"),
                "400": _json(error, "A query parameter is invalid; `field` names it"),
            }, roles=BAN_READ_ROLES, parameters=s.queries[BanQuery],
               description="Active ones only, unless all=true."),
        },
        "/api/security/bans/{key}": {
            "delete": _op("liftBan", "Lift a source's ban or unlock an extension", {
                "200": s.json(BanRecord, "The ban as lifted"),
                "404": _json(error, "No active ban or lock for this key"),
            }, roles=BAN_LIFT_ROLES, parameters=[_path_param("key")],
               description="The running service's guard follows within about a second. Audited with the "
               "key and the ban's reason."),
        },
    }  # fmt: skip


def _user_paths(s: _Schemas, error: dict[str, Any]) -> dict[str, Any]:
    """Signing in and out, users, and the audit log."""
    bad_request = _json(error, "A query parameter is invalid; `field` names it")
    not_json = _json(error, "The body is not a JSON object")
    invalid = _json(error, "A field of the body is invalid; `field` names it")
    cookies = _header(f"{SESSION_COOKIE} (HttpOnly) and {CSRF_COOKIE} (readable), SameSite=Strict; "
                      "browser sign-ins only")  # fmt: skip
    disposition = _header('attachment; filename="helpline-audit-<UTC stamp>.<format>"')
    return {
        "/api/session": {
            "post": _op("signIn", "Sign in: a browser session (cookies) or an API bearer token", {
                "200": s.json(SignInOut, "Signed in", {"Set-Cookie": cookies}), "400": not_json,
                "401": _json(error, "Wrong username or password, or the user is disabled (not told which)"),
                "409": _json(error, "The user has a live session and the concurrent-session policy refuses"),
                "422": invalid,
                "429": _json(error, "Too many failed sign-ins for this username or address",
                             {"Retry-After": _header("Seconds to wait", {"type": "integer"})}),
                "503": _json(error, "The database is unavailable"),
            }, public=True, body=s.body(SignInBody),
               description="Failed and refused sign-ins are audited and rate limited."),
            "delete": _op("signOut", "Sign out: ends this session and clears the cookies", {
                "204": {"description": "Signed out",
                        "headers": {"Set-Cookie": _header("The cookies, expired")}},
            }),
        },
        "/api/me": {
            "get": _op("getMe", "The signed-in user and their session", {
                "200": s.json(MeOut, "Who you are"),
            }),
        },
        "/api/users": {
            "get": _op("listUsers", "Every user, by username (no credentials)", {
                "200": s.json(UserList, "The users"),
            }, roles=ADMIN_ONLY),
            "post": _op("createUser", "Add a user; without a password one is generated and returned once", {
                "201": s.json(UserCreated, "The new user", {"Location": _header("/api/users/{username}")}),
                "400": not_json, "409": _json(error, "A user with this username exists"), "422": invalid,
            }, roles=ADMIN_ONLY, body=s.body(UserCreate)),
        },
        "/api/users/{username}": {
            "patch": _op("updateUser", "Change a user's role, name, extension, password or disabled flag", {
                "200": s.json(UserRecord, "The updated user"), "400": not_json,
                "404": _json(error, "No such user"),
                "409": _json(error, "That would leave no enabled admin"), "422": invalid,
            }, roles=ADMIN_ONLY, parameters=[_path_param("username")], body=s.body(UserPatch),
               description="Disabling a user ends their sessions; a new password ends the others."),
        },
        "/api/audit": {
            "get": _op("listAudit", "The audit log, newest first", {
                "200": s.json(AuditPage, "A page of audit entries"), "400": bad_request,
            }, roles=AUDIT_ROLES, parameters=s.queries[AuditQuery],
               description="Reading the log is itself audited."),
        },
        "/api/audit/export": {
            "get": _op("exportAudit", "The filtered audit log as a download (JSON Lines or CSV)", {
                "200": {
                    "description": "The entries; the format parameter picks the media type",
                    "headers": {"Content-Disposition": disposition},
                    "content": {
                        "application/x-ndjson": {"schema": {
                            **_STRING, "description": "One AuditRecord as canonical JSON per line, oldest "
                            "first: the whole filtered log",
                        }},
                        "text/csv": {"schema": {
                            **_STRING, "description": "A header row of the AuditRecord fields, then one "
                            "row per entry; detail is canonical JSON",
                        }},
                    },
                },
                "400": bad_request,
            }, roles=AUDIT_ROLES, parameters=s.queries[AuditExportQuery],
               description="The export is audited."),
        },
    }  # fmt: skip


def _recording_paths(s: _Schemas, error: dict[str, Any]) -> dict[str, Any]:
    """Recordings (search, view, play, download, export, hold, delete), erasure and retention."""
    bad_request = _json(error, "A query parameter is invalid; `field` names it")
    not_json = _json(error, "The body is not a JSON object")
    invalid = _json(error, "A field of the body is invalid; `field` names it")
    missing = _json(error, "No such recording")
    gone = _json(error, "The recording's media was deleted or erased; only its receipt remains")
    not_ready = _json(error, "The recording is still being recorded or was never stored")
    no_media = _json(error, "The stored media cannot be read (or is encrypted and no key is configured), "
                            "or the database is unavailable")  # fmt: skip
    media_errors = {"404": missing, "409": not_ready, "410": gone, "503": no_media}
    recording_id = _path_param("id")
    ranged = {
        "Accept-Ranges": _header("bytes"),
        "Content-Length": _header("Bytes in this response", {"type": "integer"}),
    }
    byte_range = {"name": "Range", "in": "header", "required": False, "schema": _STRING,
                  "description": "One byte range (bytes=0-99, bytes=500-, bytes=-200); several are "
                  "served as the one span covering them"}  # fmt: skip

    def wav_responses(headers: dict[str, Any]) -> dict[str, Any]:
        return {
            "200": _binary("audio/wav", "The whole WAV", {**ranged, **headers}),
            "206": _binary(
                "audio/wav",
                "The requested byte range",
                {
                    **ranged,
                    **headers,
                    "Content-Range": _header("bytes FIRST-LAST/SIZE"),
                },
            ),
            "416": {
                "description": "No requested byte lies within the file",
                "headers": {"Content-Range": _header("bytes */SIZE")},
            },
        }

    peaks = {
        "type": "object",
        "additionalProperties": True,
        "required": ["rate", "channels", "length", "data"],
        "properties": {
            "rate": {"type": "integer", "description": "Buckets per second (20)"},
            "channels": {"type": "integer"},
            "length": {"type": "integer", "description": "Buckets per channel"},
            "data": {
                "type": "array",
                "description": "Per channel: min, max, min, max... (-128..127)",
                "items": {"type": "array", "items": {"type": "integer"}},
            },
        },
    }
    integrity = {
        "type": "object",
        "additionalProperties": True,
        "required": ["status", "checked_at"],
        "properties": {
            "status": {"enum": ["verified", "failed", "unverified"]},
            "checked_at": {"type": "string", "format": "date-time"},
            "ok": {"type": "boolean"},
            "problems": {"type": "array", "items": {"type": "object"}},
            "notes": {"type": "array", "items": {"type": "string"}},
        },
    }
    return {
        "/api/recordings": {
            "get": _op("listRecordings", "Recordings, newest first", {
                "200": s.json(RecordingPage, "A page of recordings"), "400": bad_request,
            }, roles=REVIEW_ROLES, parameters=s.queries[RecordingQuery], description="Searches are audited."),
        },
        "/api/recordings/export": {
            "post": _op("exportRecordings", "A ZIP of sealed recordings with their manifests and proofs", {
                "200": _binary("application/zip", "The bundle", {
                    "Content-Disposition": _header('attachment; filename="recordings-<UTC stamp>.zip"'),
                }),
                "400": not_json, **media_errors,
                "422": _json(error, "A field of the body is invalid, or a recording is named twice"),
            }, roles=REVIEW_ROLES, body=s.body(ExportRequest), description="The export is audited."),
        },
        "/api/recordings/{id}": {
            "parameters": [recording_id],
            "get": _op("getRecording", "One recording: metadata, overlays, channel map, consent evidence", {
                "200": s.json(RecordingOut, "The recording (a deleted one is its receipt)"), "404": missing,
            }, roles=REVIEW_ROLES, description="Viewing is audited."),
            "delete": _op("deleteRecording", "Delete a recording's media, leaving a signed receipt", {
                "200": s.json(RecordingRow, "The recording's receipt"), "400": not_json, "404": missing,
                "409": _json(error, "Refused: under legal hold or within the retention floor, or not stored"),
                "410": gone, "422": _json(error, "A reason is required"), "503": no_media,
            }, roles=REVIEW_ROLES, body=s.body(ReasonBody, required=False),
               parameters=[{"name": "reason", "in": "query", "required": False, "schema": _STRING,
                            "description": "Why; instead of the body"}],
               description="Give the reason as ?reason= or in the body. Deletions and refusals are audited."),
        },
        "/api/recordings/{id}/peaks": {
            "get": _op("getRecordingPeaks", "The waveform: min and max per 50 ms per channel", {
                "200": _json(peaks, "The peaks"), **media_errors,
            }, roles=REVIEW_ROLES, parameters=[recording_id]),
        },
        "/api/recordings/{id}/play": {
            "post": _op("playRecording", "The audited act of playing a time range: returns a play ticket", {
                "200": s.json(PlayTicketOut, "The ticket and the audio URL that takes it"), "400": not_json,
                **media_errors, "422": _json(error, "start or end is invalid or outside the recording"),
            }, roles=REVIEW_ROLES, parameters=[recording_id], body=s.body(PlayRequest),
               description="The ticket lets this user fetch /audio for this recording; outside the time "
               "range the bytes are silence. Playing is audited."),
        },
        "/api/recordings/{id}/audio": {
            "get": _op("getRecordingAudio", "The WAV under a play ticket, with HTTP Range (HEAD too)", {
                **wav_responses({}),
                "403": _json(error, "No ticket, or it is unknown, expired, or another user's or recording's"),
                **media_errors,
            }, parameters=[recording_id, {
                "name": "ticket", "in": "query", "required": True, "schema": _STRING,
                "description": "From POST /api/recordings/{id}/play"}, byte_range],
               description="The ticket was issued only to a role that may play (" + ", ".join(REVIEW_ROLES)
               + "); fetches are not audited (the play was)."),
        },
        "/api/recordings/{id}/integrity": {
            "get": _op("getRecordingIntegrity", "Verify the recording's signature, hashes and ledger entry", {
                "200": _json(integrity, "The verdict with the verifier's report"), **media_errors,
            }, roles=REVIEW_ROLES, parameters=[recording_id]),
        },
        "/api/recordings/{id}/download": {
            "get": _op("downloadRecording", "The whole WAV as a download, with HTTP Range", {
                **wav_responses({"Content-Disposition": _header('attachment; filename="<name>.wav"')}),
                **media_errors,
            }, roles=REVIEW_ROLES, parameters=[recording_id, byte_range],
               description="Each download request is audited."),
        },
        "/api/recordings/{id}/hold": {
            "parameters": [recording_id],
            "put": _op("holdRecording", "Put a recording under legal hold (it cannot be deleted)", {
                "200": s.json(RecordingRow, "The recording"), "400": not_json, **media_errors,
                "409": _json(error, "Already under legal hold, or not stored"), "422": invalid,
            }, roles=REVIEW_ROLES, body=s.body(ReasonBody), description="Audited."),
            "delete": _op("releaseRecording", "Release a recording's legal hold", {
                "200": s.json(RecordingRow, "The recording"), "404": missing,
                "409": _json(error, "Not under legal hold"),
            }, roles=REVIEW_ROLES, description="Audited."),
        },
        "/api/erasure": {
            "post": _op("eraseByPhone", "A data subject's erasure request: delete their recordings", {
                "200": s.json(ErasureReport, "What was deleted, what stays and why"), "400": not_json,
                "422": invalid,
            }, roles=REVIEW_ROLES, body=s.body(ErasureRequest),
               description="Recordings under legal hold or within their retention floor stay. Audited."),
        },
        "/api/retention-policies": {
            "get": _op("listRetentionPolicies", "Every retention policy, by name", {
                "200": s.json(RetentionList, "The policies"),
            }, roles=REVIEW_ROLES),
        },
        "/api/retention-policies/{name}": {
            "parameters": [_path_param("name")],
            "get": _op("getRetentionPolicy", "One retention policy", {
                "200": s.json(RetentionRow, "The policy"), "404": _json(error, "No such retention policy"),
            }, roles=REVIEW_ROLES),
            "put": _op("setRetentionPolicy", "Change how many days a policy keeps recordings", {
                "200": s.json(RetentionRow, "The policy"), "400": not_json,
                "404": _json(error, "No such retention policy"),
                "422": _json(error, "Invalid, or below the policy's floor"),
            }, roles=POLICY_WRITE_ROLES, body=s.body(RetentionChange),
               description="Never below the policy's floor. Changes and refusals are audited."),
        },
    }  # fmt: skip
