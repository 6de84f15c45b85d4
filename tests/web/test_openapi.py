"""The OpenAPI document against the real app: it validates, it lists exactly the routes the app serves,
its security and role claims hold over the wire, and real responses match the schemas it names."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.routing import Route

from helpline.events import EventBus
from helpline.store import Store
from helpline.web import create_app
from tests.web.http_support import bearer_headers, serve
from tests.web.recording_fixture import Archive, make_archive

ROLES = ("admin", "supervisor", "agent", "compliance")
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
PUBLIC_OPERATIONS = {
    ("/healthz", "get"), ("/metrics", "get"), ("/openapi.json", "get"), ("/api/session", "post"),
}  # fmt: skip
ROLE_REFUSAL = re.compile(r"^this needs the role ")
"""How ``require_role``'s 403 begins (a CSRF or play-ticket 403 reads differently)."""


@dataclass
class Served:
    app: Starlette
    base: str
    doc: dict[str, Any]
    store: Store
    archive: Archive
    headers: dict[str, dict[str, str]]
    """Bearer headers of one user per role."""


@pytest.fixture
async def served(migrated_store: Store, tmp_path: Path) -> AsyncIterator[Served]:
    await migrated_store.retention.seed(
        {"default": {"days": 365, "floor_days": 0, "purpose": "quality", "lawful_basis": "consent"}},
        datetime.now(UTC),
    )
    archive = make_archive(tmp_path, migrated_store)
    app = create_app(migrated_store, EventBus(), CollectorRegistry(), recordings=archive.library())
    headers = {role: await bearer_headers(migrated_store, f"user-{role}", role) for role in ROLES}
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        r = await http.get("/openapi.json")
        assert r.status_code == 200, r.text
        yield Served(app, base, r.json(), migrated_store, archive, headers)


def operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (path, method): op
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in METHODS
    }


def app_operations(app: Starlette) -> dict[tuple[str, str], Route]:
    """Every (path, method) the app routes; HEAD only where there is no GET (Starlette adds it)."""
    found: dict[tuple[str, str], Route] = {}
    for route in app.routes:
        if not isinstance(route, Route) or route.methods is None:
            continue
        for method in route.methods:
            if method == "HEAD" and "GET" in route.methods:
                continue
            found[(route.path, method.lower())] = route
    return found


def filled(path: str) -> str:
    """``path`` with every ``{param}`` replaced by a value no object has."""
    return re.sub(r"\{[^}]+\}", "no-such-thing", path)


def path_parameters(doc: dict[str, Any], path: str, method: str) -> set[str]:
    item = doc["paths"][path]
    params = [*item.get("parameters", []), *item[method].get("parameters", [])]
    return {p["name"] for p in params if p["in"] == "path"}


def response_schema(doc: dict[str, Any], path: str, method: str, status: str) -> OAS31Validator:
    """A validator for the documented JSON body of one response, resolving refs into the document."""
    schema = doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
    return OAS31Validator({**schema, "components": doc["components"]})


async def test_the_document_is_valid_openapi_with_both_security_schemes(served: Served) -> None:
    doc = served.doc
    validate(doc)  # raises on an invalid OpenAPI 3.1 document
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert schemes["session"] == {**schemes["session"], "type": "apiKey", "in": "cookie",
                                  "name": "helpline_session"}  # fmt: skip
    assert "X-CSRF-Token" in schemes["session"]["description"]
    assert "helpline_csrf" in schemes["session"]["description"]
    assert doc["security"] == [{"bearer": []}, {"session": []}]
    ops = operations(doc)
    assert {key for key, op in ops.items() if op.get("security") == []} == PUBLIC_OPERATIONS
    ids = [op["operationId"] for op in ops.values()]
    assert len(ids) == len(set(ids))
    for (path, method), op in ops.items():
        assert op["description"], (path, method)
        if (path, method) not in PUBLIC_OPERATIONS:
            assert op["responses"]["401"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorBody"
            }, (path, method)


async def test_every_api_route_is_documented_and_nothing_else(served: Served) -> None:
    documented = operations(served.doc)
    routed = app_operations(served.app)
    api_routed = {key for key in routed if key[0] == "/api" or key[0].startswith("/api/")}
    api_documented = {key for key in documented if key[0].startswith("/api/")}
    assert sorted(api_routed - api_documented) == [], "routes missing from the document"
    assert sorted(set(documented) - set(routed)) == [], "documented operations the app does not serve"
    assert api_routed == api_documented
    for key in documented:
        route = routed[key]
        assert path_parameters(served.doc, *key) == set(route.param_convertors), key


async def test_only_the_public_operations_answer_without_credentials(served: Served) -> None:
    async with httpx.AsyncClient(base_url=served.base, timeout=10) as http:
        for path, method in operations(served.doc):
            r = await http.request(method.upper(), filled(path))
            if (path, method) in PUBLIC_OPERATIONS:
                assert r.status_code != 401, (path, method, r.text)
            else:
                assert r.status_code == 401, (path, method, r.status_code, r.text)
                assert "error" in r.json()


async def test_the_documented_roles_are_the_ones_the_handlers_allow(served: Served) -> None:
    ops = operations(served.doc)
    # Signing out ends the caller's session, so it goes last.
    order = sorted(ops, key=lambda key: key == ("/api/session", "delete"))
    async with httpx.AsyncClient(base_url=served.base, timeout=10) as http:
        for path, method in order:
            op = ops[(path, method)]
            if (path, method) in PUBLIC_OPERATIONS:
                continue
            allowed = set(op.get("x-roles", ROLES))
            if "x-roles" in op:
                assert op["description"].startswith(f"Roles: {', '.join(op['x-roles'])}."), (path, method)
            for role in ROLES:
                r = await http.request(method.upper(), filled(path), headers=served.headers[role])
                refused = r.status_code == 403 and bool(ROLE_REFUSAL.match(r.json().get("error", "")))
                assert refused == (role not in allowed), (path, method, role, r.status_code, r.text)
                if refused:
                    assert "403" in op["responses"], (path, method)


async def test_real_responses_match_the_documented_schemas(served: Served) -> None:
    doc = served.doc
    row, _wav = await served.archive.seal(seconds=4, caller="+15557654321")
    admin = served.headers["admin"]
    async with httpx.AsyncClient(base_url=served.base, timeout=10, headers=admin) as http:
        gets = [
            "/api/calls", "/api/security-events", "/api/flows", "/api/agents", "/api/queues", "/api/me",
            "/api/users", "/api/audit", "/api/recordings", "/api/retention-policies",
            "/api/retention-policies/{name}", "/api/recordings/{id}", "/api/recordings/{id}/peaks",
            "/api/recordings/{id}/integrity",
        ]  # fmt: skip
        for path in gets:
            r = await http.get(path.format(name="default", id=row.id))
            assert r.status_code == 200, (path, r.text)
            response_schema(doc, path, "get", "200").validate(r.json())
        listed = (await http.get("/api/recordings")).json()
        assert [item["id"] for item in listed["items"]] == [row.id]

        r = await http.get("/api/recordings/no-such-thing")
        assert r.status_code == 404
        response_schema(doc, "/api/recordings/{id}", "get", "404").validate(r.json())

        r = await http.post(f"/api/recordings/{row.id}/play", json={"start": 1, "end": 2})
        assert r.status_code == 200, r.text
        response_schema(doc, "/api/recordings/{id}/play", "post", "200").validate(r.json())
        audio = doc["paths"]["/api/recordings/{id}/audio"]["get"]["responses"]
        r = await http.get(r.json()["audio_url"], headers={"Range": "bytes=0-99"})
        assert r.status_code == 206 and r.headers["content-type"] in audio["206"]["content"]
        assert set(audio["206"]["headers"]) <= {name.title() for name in r.headers}
        r = await http.get(f"/api/recordings/{row.id}/download", headers={"Range": "bytes=999999999-"})
        download = doc["paths"]["/api/recordings/{id}/download"]["get"]["responses"]
        assert r.status_code == 416 and "Content-Range" in download["416"]["headers"]
        assert r.headers["content-range"].startswith("bytes */")

        export = doc["paths"]["/api/audit/export"]["get"]["responses"]["200"]["content"]
        for fmt in ("csv", "jsonl"):
            r = await http.get("/api/audit/export", params={"format": fmt})
            assert r.status_code == 200
            assert r.headers["content-type"].split(";")[0] in export

        r = await http.post("/api/erasure", json={"phone": "+15557654321"})
        assert r.status_code == 200, r.text
        response_schema(doc, "/api/erasure", "post", "200").validate(r.json())
        report_schema = doc["components"]["schemas"]["ErasureReport"]
        assert set(r.json()) == set(report_schema["properties"]) and r.json()["deleted"] == [row.id]
        policies = (await http.get("/api/retention-policies")).json()
        assert set(policies) == set(doc["components"]["schemas"]["RetentionList"]["properties"])

        r = await http.post("/api/session", json={"username": "user-admin", "password": "test-password",
                                                  "kind": "api"})  # fmt: skip
        assert r.status_code == 200, r.text
        response_schema(doc, "/api/session", "post", "200").validate(r.json())
