"""``http``: a templated request through the channel's :class:`HttpPort`, response mapped to variables."""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any, Literal

from pydantic import Field

from helpline.ivr.context import RunContext
from helpline.ivr.model import REQUIRED, NodeBase, OutcomeRule, Template, VarName


def pick(document: Any, path: str) -> Any:
    """Follow a dotted path (``customer.accounts.0.id``) into decoded JSON; missing parts give ``None``."""
    value = document
    for part in path.split(".") if path else []:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


class HttpNode(NodeBase):
    """Outcomes: ``ok`` (2xx), ``error`` (other status, transport failure, bad JSON), ``timeout``
    (falls back to ``error`` when unmapped). ``save`` maps variables to dotted paths in the JSON body;
    ``status_var`` receives the status code.
    """

    type: Literal["http"]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    url: Template
    headers: dict[str, Template] = Field(default_factory=dict)
    body: Template | dict[str, Template] | None = None
    timeout: float = Field(default=5.0, gt=0, le=60)
    save: dict[VarName, str] = Field(default_factory=dict)
    status_var: VarName | None = None
    outcomes = MappingProxyType(
        {"ok": REQUIRED, "error": REQUIRED, "timeout": OutcomeRule("fallback", fallback="error")}
    )

    def _body(self, ctx: RunContext) -> str | None:
        if self.body is None:
            return None
        if isinstance(self.body, str):
            return ctx.render(self.body)
        return json.dumps({k: ctx.render(v) for k, v in self.body.items()})

    async def run(self, ctx: RunContext) -> str:
        url = ctx.render(self.url)
        headers = {k: ctx.render(v) for k, v in self.headers.items()}
        if isinstance(self.body, dict):
            headers.setdefault("Content-Type", "application/json")
        report: dict[str, Any] = {"method": self.method, "url": ctx.render_shown(self.url)}
        try:
            response = await ctx.channel.http.request(
                self.method, url, headers=headers, body=self._body(ctx), timeout=self.timeout
            )
        except TimeoutError:
            ctx.emit("ivr.http", {**report, "result": "timeout"})
            return "timeout"
        except OSError as exc:
            ctx.emit("ivr.http", {**report, "result": "error", "error": str(exc)})
            return "error"
        report["status"] = response.status
        if self.status_var:
            ctx.set_var(self.status_var, response.status)
        if not 200 <= response.status < 300:
            ctx.emit("ivr.http", {**report, "result": "error"})
            return "error"
        if self.save:
            try:
                document = response.json()
            except ValueError as exc:
                ctx.emit("ivr.http", {**report, "result": "error", "error": f"bad JSON: {exc}"})
                return "error"
            for name, path in self.save.items():
                ctx.set_var(name, pick(document, path))
        ctx.emit("ivr.http", {**report, "result": "ok"})
        return "ok"
