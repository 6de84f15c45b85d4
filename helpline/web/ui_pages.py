"""The reviewer UI: static pages under ``/ui`` (no build step), served with a strict Content Security
Policy. The pages hold no inline script or style, so the policy can forbid both: an injected
``<script>`` or ``style=`` attribute does nothing."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, request_response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UI_DIR = Path(__file__).parent / "ui"
CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "media-src 'self'",
    "connect-src 'self'",
    "form-action 'self'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
))  # fmt: skip
SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-cache"),
)


class SecurityHeaders:
    """Adds the UI's security headers to every response of the wrapped app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in SECURITY_HEADERS}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message["headers"] = kept + list(SECURITY_HEADERS)
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _player(_request: Request) -> Response:
    return FileResponse(UI_DIR / "player.html", media_type="text/html")


async def _home(_request: Request) -> Response:
    return RedirectResponse("/ui/recordings.html", status_code=303)


def ui_routes() -> list[BaseRoute]:
    """``/`` (to the search page), ``/ui/recordings/{id}`` (the player) and the static files."""
    return [
        Route("/", _home, methods=["GET"]),
        Route("/ui/recordings/{id}", SecurityHeaders(request_response(_player)), methods=["GET", "HEAD"]),
        Mount("/ui", app=SecurityHeaders(StaticFiles(directory=UI_DIR)), name="ui"),
    ]
