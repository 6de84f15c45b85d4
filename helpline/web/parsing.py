"""Reading requests and writing responses the same way in every route: query strings and JSON bodies
validated by pydantic, errors naming the field, pages with cursors."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from helpline.store.repository import InvalidCursor
from helpline.web.errors import ApiError, from_validation_error
from helpline.web.queries import PageQuery

M = TypeVar("M", bound=BaseModel)


def parse_query(request: Request, model: type[M]) -> M:
    """The query string as ``model``; a repeated or invalid parameter is a 400 naming it."""
    params = request.query_params
    for key in params:
        if len(params.getlist(key)) > 1:
            raise ApiError(400, "given more than once", key)
    try:
        query = model.model_validate(dict(params))
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    if isinstance(query, PageQuery) and query.cursor is not None and query.offset is not None:
        raise ApiError(400, "use either cursor or offset, not both", "offset")
    return query


async def json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object; anything else is a 400."""
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}", "body") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object", "body")
    return body


def body_error(exc: ValidationError) -> ApiError:
    """A 422 naming the first invalid field of a request body (``queues.0.tier``)."""
    first = exc.errors(include_url=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or None
    message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
    return ApiError(422, message.removeprefix("Value error, "), field)


async def parse_body(request: Request, model: type[M]) -> M:
    body = await json_object(request)
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise body_error(exc) from None


def json_response(
    model: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(model.model_dump_json(), status_code, headers, media_type="application/json")


async def paged(lister: Callable[..., Awaitable[BaseModel]], filters: Any, query: PageQuery) -> Response:
    """One page of a listing; a cursor we did not issue is a 400 naming ``cursor``."""
    try:
        page = await lister(filters, limit=query.limit, cursor=query.cursor, offset=query.offset)
    except InvalidCursor as exc:
        raise ApiError(400, str(exc), "cursor") from None
    return json_response(page)
