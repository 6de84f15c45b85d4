"""``menu`` and ``collect``: thin shells over :mod:`helpline.ivr.input_policy`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from helpline.ivr.context import RunContext
from helpline.ivr.input_policy import Answer, GatherSpec, InputPolicy, ask
from helpline.ivr.model import (
    REQUIRED,
    DtmfKey,
    InputSettings,
    Loc,
    NodeBase,
    NodeId,
    NodeRef,
    OutcomeRule,
    VarName,
)
from helpline.ivr.prompts import Prompts


class InputNode(NodeBase, InputSettings):
    """A node that waits for the caller; its input settings override the flow's ``input_defaults``."""

    waits_for_caller = True
    prompt: Prompts = Field(min_length=1)

    def policy(self, ctx: RunContext) -> InputPolicy:
        return InputPolicy.resolve(self, ctx.flow.document.input_defaults)

    def outcome_rules(self, defaults: InputSettings) -> dict[str, OutcomeRule]:
        rules = dict(self.outcomes)
        zero_out = InputPolicy.resolve(self, defaults).zero_out_outcome
        if zero_out:
            rules[zero_out] = REQUIRED
        return rules


class MenuOption(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    key: DtmfKey
    outcome: NodeId | None = None
    next: NodeRef

    @property
    def name(self) -> str:
        return self.outcome or f"key_{self.key}"


class MenuNode(InputNode):
    """Pick one option by key. Outcomes: each option (``outcome`` or ``key_<k>``), ``exhausted``."""

    type: Literal["menu"]
    options: list[MenuOption] = Field(min_length=1)
    outcomes = {"exhausted": REQUIRED}

    def outcome_rules(self, defaults: InputSettings) -> dict[str, OutcomeRule]:
        rules = super().outcome_rules(defaults)
        rules.update({option.name: REQUIRED for option in self.options})
        return rules

    def routes(self) -> Iterator[tuple[str, str, Loc]]:
        for i, option in enumerate(self.options):
            yield option.name, option.next, ("options", i, "next")
        yield from super().routes()

    async def run(self, ctx: RunContext) -> str:
        by_key = {option.key: option for option in self.options}

        def match(value: str) -> Answer | None:
            option = by_key.get(value)
            return Answer(option.name, value) if option else None

        stops = frozenset(by_key)
        answer = await ask(ctx, self.policy(ctx), self.prompt, GatherSpec(1, None, stops), match,
                           sensitive=self.sensitive)
        if answer.value is not None:
            ctx.set_var("last_menu_key", answer.value, sensitive=self.sensitive)
        return answer.outcome


class CollectNode(InputNode):
    """Collect digits into ``variable``. Outcomes ``ok``, ``invalid`` (nomatch retries used up; falls back
    to ``exhausted`` when unmapped) and ``exhausted`` (noinput retries used up).

    ``sensitive`` (a field of every node) keeps the value out of every event and log (shown as ``***``).
    """

    type: Literal["collect"]
    variable: VarName
    kind: Literal["digits"] = "digits"
    min_length: int = Field(default=1, ge=1, le=64)
    max_length: int = Field(default=16, ge=1, le=64)
    terminator: DtmfKey | None = "#"
    validator: str | None = None
    outcomes = {
        "ok": REQUIRED,
        "invalid": OutcomeRule("fallback", fallback="exhausted"),
        "exhausted": REQUIRED,
    }

    @field_validator("validator")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"bad regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _lengths(self) -> CollectNode:
        if self.min_length > self.max_length:
            raise ValueError("min_length is larger than max_length")
        return self

    async def run(self, ctx: RunContext) -> str:
        pattern = re.compile(self.validator) if self.validator else None
        policy = self.policy(ctx)

        def match(value: str) -> Answer | None:
            if not value.isdigit() or not self.min_length <= len(value) <= self.max_length:
                return None
            if pattern is not None and not pattern.fullmatch(value):
                return None
            return Answer("ok", value)

        stops = frozenset(k for k in (policy.repeat_key, policy.zero_out_key) if k and not k.isdigit())
        spec = GatherSpec(self.max_length, self.terminator, stops)
        answer = await ask(
            ctx, policy, self.prompt, spec, match, sensitive=self.sensitive, nomatch_outcome="invalid"
        )
        if answer.outcome == "ok":
            ctx.set_var(self.variable, answer.value, sensitive=self.sensitive)
        return answer.outcome
