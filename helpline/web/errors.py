"""JSON errors for the API: ``{"error": "...", "field": "..."}`` with the offending field when known."""

from __future__ import annotations

import logging

from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

logger = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    error: str = Field(description="What went wrong")
    field: str | None = Field(None, description="The query parameter at fault, when there is one")


class ApiError(Exception):
    def __init__(self, status: int, error: str, field: str | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.field = field


def error_response(status: int, error: str, field: str | None = None) -> JSONResponse:
    body = {"error": error} if field is None else {"error": error, "field": field}
    return JSONResponse(body, status_code=status)


def from_validation_error(exc: ValidationError) -> ApiError:
    """The first problem of a query model, naming its parameter."""
    first = exc.errors(include_url=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or None
    if first["type"] == "extra_forbidden":
        return ApiError(400, "unknown query parameter", field)
    return ApiError(400, first["msg"], field)


async def handle_api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.error, exc.field)


async def handle_http_exception(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, exc.detail)


async def handle_database_error(request: Request, exc: Exception) -> Response:
    logger.error("database error serving %s", request.url.path, exc_info=exc)
    return error_response(503, "database unavailable")


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error serving %s", request.url.path, exc_info=exc)
    return error_response(500, "internal error")


EXCEPTION_HANDLERS = {
    ApiError: handle_api_error,
    HTTPException: handle_http_exception,
    DBAPIError: handle_database_error,
    # The API's only I/O is the database; asyncpg reports "cannot connect" as a bare OSError.
    OSError: handle_database_error,
    Exception: handle_unexpected,
}
