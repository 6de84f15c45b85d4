"""The OpenAPI 3.1 document, built from the same pydantic models that validate queries and shape
responses, so it cannot drift from what the endpoints do."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from helpline.store.records import CallDetail, CallRecord, Page, SecurityEventRecord
from helpline.web.errors import ErrorBody
from helpline.web.flows import FlowList
from helpline.web.queries import CallQuery, SecurityEventQuery

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


def build_openapi(version: str) -> dict[str, Any]:
    call_page = Page[CallRecord]
    security_page = Page[SecurityEventRecord]
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (call_page, "serialization"),
        (CallDetail, "serialization"),
        (security_page, "serialization"),
        (ErrorBody, "serialization"),
        (FlowList, "serialization"),
        (CallQuery, "validation"),
        (SecurityEventQuery, "validation"),
    ]
    refs, top = models_json_schema(models, ref_template=_REF)
    schemas: dict[str, Any] = top.get("$defs", {})
    # Query models become parameter lists, not schemas of their own.
    call_query = schemas.pop(refs[(CallQuery, "validation")]["$ref"].rsplit("/", 1)[1])
    security_query = schemas.pop(refs[(SecurityEventQuery, "validation")]["$ref"].rsplit("/", 1)[1])

    def ref(model: type[BaseModel]) -> dict[str, Any]:
        return refs[(model, "serialization")]

    bad_request = _json(ref(ErrorBody), "A query parameter is invalid; `field` names it")
    unavailable = _json(ref(ErrorBody), "The database is unavailable")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Helpline API",
            "version": version,
            "description": "Call detail records, call event logs and security events. Times: ISO 8601 UTC.",
        },
        "paths": {
            "/api/calls": {
                "get": {
                    "operationId": "listCalls",
                    "summary": "Calls, newest first",
                    "parameters": _parameters(call_query, CallQuery),
                    "responses": {"200": _json(ref(call_page), "A page of calls"),
                                  "400": bad_request, "503": unavailable},
                }
            },
            "/api/calls/{call_id}": {
                "get": {
                    "operationId": "getCall",
                    "summary": "One call with its events in order",
                    "parameters": [{"name": "call_id", "in": "path", "required": True,
                                    "schema": {"type": "string"}}],
                    "responses": {"200": _json(ref(CallDetail), "The call"),
                                  "404": _json(ref(ErrorBody), "No such call"), "503": unavailable},
                }
            },
            "/api/security-events": {
                "get": {
                    "operationId": "listSecurityEvents",
                    "summary": "Security events, newest first",
                    "parameters": _parameters(security_query, SecurityEventQuery),
                    "responses": {"200": _json(ref(security_page), "A page of security events"),
                                  "400": bad_request, "503": unavailable},
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
