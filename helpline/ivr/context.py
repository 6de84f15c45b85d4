"""Per-run state that nodes work on: variables, masking of sensitive values, event emission."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from helpline.ivr.channel import Channel
from helpline.ivr.expressions import compile_expression, render_template
from helpline.ivr.model import Flow
from helpline.ivr.prompts import PromptRef, resolve_prompts
from helpline.voice.prompt_spec import PromptSpec

MASK = "***"
#: A secret at least this long is also masked inside longer text; a shorter one (a 1-digit entry)
#: only where it is the whole value, since as a substring it would hit unrelated digits everywhere.
MIN_SUBSTRING = 3
#: Event fields that hold identifiers or counters taken from the flow file or fixed sets (never from
#: the caller), so they are never masked: a secret ``1`` must not turn milestone ``m1`` into ``m***``.
IDENTIFIER_FIELDS = frozenset({
    "flow", "version", "type", "via", "name", "handler", "outcome", "queue", "priority", "skills",
    "method", "result", "status", "source", "action", "matched", "count", "max", "barge_in",
    "interrupted_by",
})


@dataclass(slots=True)
class Secrets:
    """Names of sensitive variables and the values they held, shared by a flow and its subflows.

    Masking rules: a value equal to a secret (a string, or a number whose text is the secret) is
    replaced by ``***``; a secret of :data:`MIN_SUBSTRING` characters or more is also replaced
    wherever it occurs inside a string or a number's text. Mapping keys are never masked.
    """

    names: set[str] = field(default_factory=set)
    values: set[str] = field(default_factory=set)

    def add(self, name: str, value: Any) -> None:
        self.names.add(name)
        text = "" if value is None else str(value)
        if text:
            self.values.add(text)

    def mask_text(self, text: str) -> str:
        if not self.values:
            return text
        if text in self.values:
            return MASK
        for secret in sorted(self.values, key=len, reverse=True):
            if len(secret) >= MIN_SUBSTRING:
                text = text.replace(secret, MASK)
        return text

    def mask(self, value: Any) -> Any:
        """Mask every sensitive value anywhere inside ``value``."""
        if not self.values or value is None or isinstance(value, bool):
            return value
        if isinstance(value, str):
            return self.mask_text(value)
        if isinstance(value, Mapping):
            return {k: self.mask(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.mask(v) for v in value]
        if isinstance(value, int | float):
            text = str(value)
            return MASK if self.mask_text(text) != text else value
        return value

    def mask_event(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Mask an event's data, leaving :data:`IDENTIFIER_FIELDS` as they are."""
        return {k: v if k in IDENTIFIER_FIELDS else self.mask(v) for k, v in data.items()}


@dataclass(slots=True)
class RunContext:
    """One flow invocation (the top-level flow or a subflow) on one channel."""

    flow: Flow
    channel: Channel
    variables: dict[str, Any]
    secrets: Secrets
    path: list[str]
    depth: int = 0
    visits: Counter[str] = field(default_factory=Counter)
    node_id: str | None = None

    def emit(self, type: str, data: dict[str, Any], *, node_id: str | None = None) -> None:
        """Send an event with every sensitive value masked, labelled with the flow that runs."""
        payload = self.secrets.mask_event(data)
        payload.setdefault("flow", self.flow.id)
        self.channel.emit(type, node_id if node_id is not None else self.node_id, payload)

    def set_var(self, name: str, value: Any, *, sensitive: bool = False) -> None:
        if sensitive:
            self.secrets.add(name, value)
        self.variables[name] = value
        shown = MASK if sensitive or name in self.secrets.names else value
        self.emit("ivr.variable_set", {"name": name, "value": _jsonable(shown)})

    def evaluate(self, expression: str) -> Any:
        return compile_expression(expression).evaluate(self.variables)

    def render(self, template: str) -> str:
        return render_template(template, self.variables)

    def render_shown(self, template: str) -> str:
        """``template`` as events may show it: a hole whose value is a secret renders as ``***``,
        however short the secret is."""
        return render_template(template, self.variables, self.secrets.mask)

    def prompt_specs(self, refs: Sequence[PromptRef]) -> list[PromptSpec]:
        doc = self.flow.document
        return resolve_prompts(refs, doc.prompts, self.flow.base_dir, self.variables, doc.flow.language,
                               show=self.secrets.mask)

    async def play_specs(self, specs: Sequence[PromptSpec], *, barge_in: bool) -> str | None:
        """Play resolved prompts and report them (and any barge-in) as ``ivr.prompt_played``."""
        if not specs:
            return None
        digit = await self.channel.play(specs, barge_in=barge_in)
        data: dict[str, Any] = {"prompts": [s.describe() for s in specs], "barge_in": barge_in}
        if digit is not None:
            data["interrupted_by"] = "dtmf"
        self.emit("ivr.prompt_played", data)
        return digit

    async def play(self, refs: Sequence[PromptRef], *, barge_in: bool) -> str | None:
        return await self.play_specs(self.prompt_specs(refs), barge_in=barge_in)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)
