"""``set``, ``branch``, ``goto`` and ``milestone``: logic without caller interaction."""

from __future__ import annotations

from collections.abc import Iterator
from types import MappingProxyType
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from helpline.ivr.context import RunContext
from helpline.ivr.model import (
    REQUIRED,
    Expr,
    FlowEnd,
    InputSettings,
    Loc,
    NodeBase,
    NodeRef,
    OutcomeRule,
    Template,
    VarName,
)


class SetNode(NodeBase):
    """Assign variables. Values are expressions (quote string literals: ``"'gold'"``)."""

    type: Literal["set"]
    values: dict[VarName, Expr] = Field(min_length=1)

    async def run(self, ctx: RunContext) -> str:
        for name, expression in self.values.items():
            ctx.set_var(name, ctx.evaluate(expression))
        return "next"


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    when: Expr
    next: NodeRef


class BranchNode(NodeBase):
    """The first condition that holds wins; ``default`` is required so a branch never dead-ends."""

    type: Literal["branch"]
    conditions: list[Condition] = Field(min_length=1)
    default: NodeRef
    outcomes = MappingProxyType({})

    def outcome_rules(self, defaults: InputSettings) -> dict[str, OutcomeRule]:
        return {name: REQUIRED for name, _, _ in self.routes()}

    def routes(self) -> Iterator[tuple[str, str, Loc]]:
        for i, condition in enumerate(self.conditions):
            yield f"when_{i}", condition.next, ("conditions", i, "next")
        yield "default", self.default, ("default",)

    async def run(self, ctx: RunContext) -> str:
        for i, condition in enumerate(self.conditions):
            if ctx.evaluate(condition.when):
                return f"when_{i}"
        return "default"


class GotoNode(NodeBase):
    """Jump to ``target``. Loops need ``max_visits``; past it the outcome is ``exceeded``."""

    type: Literal["goto"]
    target: NodeRef
    max_visits: int | None = Field(default=None, ge=1, le=1000)
    outcomes = MappingProxyType({"goto": REQUIRED, "exceeded": OutcomeRule("optional")})

    def routes(self) -> Iterator[tuple[str, str, Loc]]:
        yield "goto", self.target, ("target",)
        yield from super().routes()

    async def run(self, ctx: RunContext) -> str:
        if self.max_visits is not None and ctx.visits[self.id] > self.max_visits:
            return "exceeded"
        return "goto"


class MilestoneNode(NodeBase):
    """Record a named business milestone (containment, funnel steps) as ``ivr.milestone``."""

    type: Literal["milestone"]
    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]+$")
    data: dict[str, Template] = Field(default_factory=dict)

    async def run(self, ctx: RunContext) -> str | FlowEnd:
        data = {key: ctx.render_shown(value) for key, value in self.data.items()}
        ctx.emit("ivr.milestone", {"name": self.name, "data": data})
        return "next"
