"""``subflow`` (call another flow with inputs) and ``return`` (end it with outputs and an outcome)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal

from pydantic import Field

from helpline.ivr.context import RunContext
from helpline.ivr.interpreter import MAX_DEPTH, FlowError, execute
from helpline.ivr.model import (
    Expr,
    FlowEnd,
    FlowRef,
    InputSettings,
    NodeBase,
    NodeId,
    OutcomeRule,
    VarName,
)

#: How a child flow that does not ``return`` ends the call, passed on unchanged.
CALL_ENDING = ("hangup", "transferred", "answered")


class SubflowNode(NodeBase):
    """Run flow ``flow`` with ``inputs``; its ``return`` outcome routes here (``next: {outcome: node}``,
    or ``next: node`` for every outcome), its outputs land in variables (all of them, or as renamed by
    ``outputs: {local_var: output_name}``).

    The child's own unhandled errors become an error of this node, so ``on_error`` inherits
    subflow → node → flow.
    """

    type: Literal["subflow"]
    flow: FlowRef
    inputs: dict[VarName, Expr] = Field(default_factory=dict)
    outputs: dict[VarName, str] | None = None
    outcomes = MappingProxyType({})

    def outcome_rules(self, defaults: InputSettings) -> dict[str, OutcomeRule]:
        return {name: OutcomeRule() for name, _, _ in self.routes()}

    def route_for(self, outcome: str) -> str | None:
        """``next: node`` as a plain string takes every outcome the child returns."""
        if isinstance(self.next, str):
            return self.next
        return super().route_for(outcome)

    async def run(self, ctx: RunContext) -> str | FlowEnd:
        child_flow = ctx.flow.library.get(self.flow)
        if child_flow is None:
            raise FlowError(f"subflow {self.flow!r} is not loaded")
        if ctx.depth >= MAX_DEPTH:
            raise FlowError(f"subflows nested deeper than {MAX_DEPTH}")
        inputs = {name: ctx.evaluate(expr) for name, expr in self.inputs.items()}
        env: dict[str, object] = {
            **child_flow.document.variables,
            **{k: ctx.variables[k] for k in ("caller", "did", "call_id", "trunk") if k in ctx.variables},
            **inputs,
        }
        child = RunContext(
            flow=child_flow,
            channel=ctx.channel,
            variables=env,
            secrets=ctx.secrets,
            path=ctx.path,
            depth=ctx.depth + 1,
        )
        child.emit("ivr.flow_started", {"flow": child_flow.id, "version": child_flow.version})
        end = await execute(child)
        child.node_id = None
        child.emit("ivr.outcome", {"flow": child_flow.id, "outcome": end.outcome})
        if not end.returned:
            if end.outcome in CALL_ENDING:
                return end
            raise FlowError(f"subflow {self.flow!r} ended with {end.outcome!r}")
        mapping: Mapping[str, str] = (
            self.outputs if self.outputs is not None else {k: k for k in end.outputs}
        )
        for local, output in mapping.items():
            if output in end.outputs:
                ctx.set_var(local, end.outputs[output], sensitive=output in ctx.secrets.names)
        return end.outcome


class ReturnNode(NodeBase):
    """End the current (sub)flow with ``outcome`` and ``outputs`` (expressions)."""

    type: Literal["return"]
    outcome: NodeId = "done"
    outputs: dict[VarName, Expr] = Field(default_factory=dict)
    terminal = True
    outcomes = MappingProxyType({})

    async def run(self, ctx: RunContext) -> FlowEnd:
        outputs = {name: ctx.evaluate(expr) for name, expr in self.outputs.items()}
        for name, expr in self.outputs.items():
            if expr.strip() in ctx.secrets.names:
                ctx.secrets.add(name, outputs[name])
        return FlowEnd(self.outcome, outputs, returned=True)
