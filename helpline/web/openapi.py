"""The OpenAPI 3.1 document, built from the same pydantic models that validate queries and shape
responses, so it cannot drift from what the endpoints do."""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from helpline.store.records import AgentEventRecord, CallDetail, CallRecord, Page, SecurityEventRecord
from helpline.web.agents import AgentCreate, AgentList, AgentOut, PasswordChange, PresenceChange
from helpline.web.errors import ErrorBody
from helpline.web.flows import FlowList
from helpline.web.queries import AgentEventQuery, CallQuery, KpiQuery, RoutingQuery, SecurityEventQuery
from helpline.web.queues import KpiReport, QueueList
from helpline.web.routing import RoutingReport

_REF = "#/components/schemas/{model}"


def _json(ref: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref}}}


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


def _body(ref: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": ref}}}


def _patch_schema(create: dict[str, Any]) -> dict[str, Any]:
    """PATCH takes any subset of the profile fields except the extension (and no password)."""
    schema = copy.deepcopy(create)
    for name in ("extension", "password"):
        schema["properties"].pop(name)
    schema.pop("required", None)
    schema["title"] = "AgentPatch"
    schema["description"] = "Profile fields to replace; each one given replaces the stored value whole."
    return schema


def build_openapi(version: str) -> dict[str, Any]:
    call_page = Page[CallRecord]
    security_page = Page[SecurityEventRecord]
    agent_event_page = Page[AgentEventRecord]
    query_models: list[type[BaseModel]] = [
        CallQuery,
        SecurityEventQuery,
        AgentEventQuery,
        KpiQuery,
        RoutingQuery,
    ]
    body_models: list[type[BaseModel]] = [AgentCreate, PasswordChange, PresenceChange]
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (call_page, "serialization"),
        (CallDetail, "serialization"),
        (security_page, "serialization"),
        (ErrorBody, "serialization"),
        (FlowList, "serialization"),
        (AgentList, "serialization"),
        (AgentOut, "serialization"),
        (agent_event_page, "serialization"),
        (QueueList, "serialization"),
        (KpiReport, "serialization"),
        (RoutingReport, "serialization"),
        *((model, "validation") for model in query_models + body_models),
    ]
    refs, top = models_json_schema(models, ref_template=_REF)
    schemas: dict[str, Any] = top.get("$defs", {})
    # Query models become parameter lists, not schemas of their own.
    queries = {
        model: _parameters(schemas.pop(refs[(model, "validation")]["$ref"].rsplit("/", 1)[1]), model)
        for model in query_models
    }
    create_name = refs[(AgentCreate, "validation")]["$ref"].rsplit("/", 1)[1]
    schemas["AgentPatch"] = _patch_schema(schemas[create_name])

    def ref(model: type[BaseModel]) -> dict[str, Any]:
        return refs[(model, "serialization")]

    def body(model: type[BaseModel]) -> dict[str, Any]:
        return _body(refs[(model, "validation")])

    error = ref(ErrorBody)
    bad_request = _json(error, "A query parameter is invalid; `field` names it")
    unavailable = _json(error, "The database is unavailable")
    invalid = _json(error, "A field of the body is invalid; `field` names it (e.g. queues.0.queue)")
    no_agent = _json(error, "No such agent")
    any_object = {"type": "object", "additionalProperties": True}
    done = {"description": "Done"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Helpline API",
            "version": version,
            "description": "Call detail records, call event logs, security events, agents, queues and "
            "routing decisions. Times: ISO 8601 UTC. Errors: {error, field}.",
        },
        "paths": {
            "/api/calls": {
                "get": {
                    "operationId": "listCalls",
                    "summary": "Calls, newest first",
                    "parameters": queries[CallQuery],
                    "responses": {"200": _json(ref(call_page), "A page of calls"),
                                  "400": bad_request, "503": unavailable},
                }
            },
            "/api/calls/{call_id}": {
                "get": {
                    "operationId": "getCall",
                    "summary": "One call with its events in order",
                    "parameters": [_path_param("call_id")],
                    "responses": {"200": _json(ref(CallDetail), "The call"),
                                  "404": _json(ref(ErrorBody), "No such call"), "503": unavailable},
                }
            },
            "/api/security-events": {
                "get": {
                    "operationId": "listSecurityEvents",
                    "summary": "Security events, newest first",
                    "parameters": queries[SecurityEventQuery],
                    "responses": {"200": _json(ref(security_page), "A page of security events"),
                                  "400": bad_request, "503": unavailable},
                }
            },
            "/api/calls/{call_id}/routing": {
                "get": {
                    "operationId": "getCallRouting",
                    "summary": "The call's routing decisions; with agent=EXT, why that agent was not chosen",
                    "parameters": [_path_param("call_id"), *queries[RoutingQuery]],
                    "responses": {"200": _json(ref(RoutingReport), "Decisions in order"),
                                  "400": bad_request,
                                  "404": _json(error, "No such call"), "503": unavailable},
                }
            },
            "/api/agents": {
                "get": {
                    "operationId": "listAgents",
                    "summary": "Every agent, by extension, with its live state",
                    "responses": {"200": _json(ref(AgentList), "The agents"), "503": unavailable},
                },
                "post": {
                    "operationId": "createAgent",
                    "summary": "Add an agent (its password is stored as digest HA1s only)",
                    "requestBody": body(AgentCreate),
                    "responses": {"201": _json(ref(AgentOut), "The new agent"),
                                  "400": _json(error, "The body is not a JSON object"),
                                  "409": _json(error, "An agent with this extension exists"),
                                  "422": invalid, "503": unavailable},
                },
            },
            "/api/agents/{extension}": {
                "parameters": [_path_param("extension")],
                "get": {
                    "operationId": "getAgent",
                    "summary": "One agent with its live state",
                    "responses": {"200": _json(ref(AgentOut), "The agent"), "404": no_agent,
                                  "503": unavailable},
                },
                "patch": {
                    "operationId": "updateAgent",
                    "summary": "Change some of an agent's profile fields",
                    "requestBody": _body({"$ref": _REF.format(model="AgentPatch")}),
                    "responses": {"200": _json(ref(AgentOut), "The updated agent"),
                                  "400": _json(error, "The body is not a JSON object"), "404": no_agent,
                                  "422": invalid, "503": unavailable},
                },
                "delete": {
                    "operationId": "deleteAgent",
                    "summary": "Remove an agent (its event history stays)",
                    "responses": {"204": done, "404": no_agent, "503": unavailable},
                },
            },
            "/api/agents/{extension}/password": {
                "put": {
                    "operationId": "setAgentPassword",
                    "summary": "Set an agent's SIP password",
                    "parameters": [_path_param("extension")],
                    "requestBody": body(PasswordChange),
                    "responses": {"204": done, "400": _json(error, "The body is not a JSON object"),
                                  "404": no_agent, "422": invalid, "503": unavailable},
                }
            },
            "/api/agents/{extension}/presence": {
                "put": {
                    "operationId": "setAgentPresence",
                    "summary": "Log an agent in or out, ready or not ready",
                    "parameters": [_path_param("extension")],
                    "requestBody": body(PresenceChange),
                    "responses": {
                        "200": _json(any_object, "The agent's live state after the change"),
                        "400": _json(error, "The body is not a JSON object"), "404": no_agent,
                        "409": _json(error, "The queue runtime refused the change"), "422": invalid,
                        "503": _json(error, "The queue runtime is not running, or the database is down"),
                    },
                }
            },
            "/api/agents/{extension}/events": {
                "get": {
                    "operationId": "listAgentEvents",
                    "summary": "An agent's call-less events (presence, reachability...), newest first",
                    "parameters": [_path_param("extension"), *queries[AgentEventQuery]],
                    "responses": {"200": _json(ref(agent_event_page), "A page of agent events"),
                                  "400": bad_request, "503": unavailable},
                }
            },
            "/api/queues": {
                "get": {
                    "operationId": "listQueues",
                    "summary": "Live view of every queue (empty when the queue runtime is not running)",
                    "responses": {"200": _json(ref(QueueList), "The queues")},
                }
            },
            "/api/queues/{name}": {
                "get": {
                    "operationId": "getQueue",
                    "summary": "Live view of one queue",
                    "parameters": [_path_param("name")],
                    "responses": {"200": _json(any_object, "The queue"),
                                  "404": _json(error, "No such queue")},
                }
            },
            "/api/queues/{name}/kpis": {
                "get": {
                    "operationId": "getQueueKpis",
                    "summary": "Service level, ASA, AHT, abandonment, occupancy over a window",
                    "parameters": [_path_param("name"), *queries[KpiQuery]],
                    "responses": {"200": _json(ref(KpiReport), "The queue's KPIs"),
                                  "400": bad_request, "404": _json(error, "No such queue"),
                                  "503": unavailable},
                }
            },
            "/api/flows": {
                "get": {
                    "operationId": "listFlows",
                    "summary": "Flows in service and rejected flow files",
                    "responses": {"200": _json(ref(FlowList), "Every flow file the registry knows")},
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "health",
                    "summary": "Liveness and dependency status",
                    "responses": {
                        "200": {"description": "All dependencies are up", "content": {"application/json": {
                            "schema": {"type": "object"}}}},
                        "503": {"description": "A dependency is down", "content": {"application/json": {
                            "schema": {"type": "object"}}}},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "Prometheus text exposition format",
                                          "content": {"text/plain": {"schema": {"type": "string"}}}}},
                }
            },
        },
        "components": {"schemas": schemas},
    }  # fmt: skip
