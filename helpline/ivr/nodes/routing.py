"""Routing nodes: ``check_hours``, ``transfer``, ``enqueue`` and ``hangup``."""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Literal

from pydantic import Field, field_validator

from helpline.ivr.channel import EnqueueSpec
from helpline.ivr.context import RunContext
from helpline.ivr.interpreter import FlowError
from helpline.ivr.model import REQUIRED, FlowEnd, NodeBase, OutcomeRule, ScheduleRef, Template
from helpline.ivr.prompts import Prompts
from helpline.queue.requirements import compile_requirements

TARGET = re.compile(r"^(sips?:[^\s@]+@[^\s]+|sips?:[^\s]+|\+[1-9][0-9]{5,14})$")


class CheckHoursNode(NodeBase):
    """Evaluate a flow-level schedule at the channel's clock: ``open``, ``closed`` or ``holiday``
    (``holiday`` falls back to ``closed`` when unmapped)."""

    type: Literal["check_hours"]
    schedule: ScheduleRef
    outcomes = MappingProxyType(
        {"open": REQUIRED, "closed": REQUIRED, "holiday": OutcomeRule("fallback", fallback="closed")}
    )

    async def run(self, ctx: RunContext) -> str:
        schedule = ctx.flow.document.schedules[self.schedule]
        result = schedule.evaluate(ctx.channel.now(), ctx.flow.document.flow.timezone)
        ctx.set_var("hours", result)
        return result


class TransferNode(NodeBase):
    """Blind transfer to a SIP URI or an E.164 number (the channel routes numbers out via a trunk).
    ``connected`` ends the flow (outcome ``transferred``) unless mapped; ``busy``/``no_answer`` fall back
    to ``failed``."""

    type: Literal["transfer"]
    target: Template
    ring_timeout: float = Field(default=30.0, gt=0, le=300)
    outcomes = MappingProxyType({
        "connected": OutcomeRule("ends", flow_outcome="transferred"),
        "busy": OutcomeRule("fallback", fallback="failed"),
        "no_answer": OutcomeRule("fallback", fallback="failed"),
        "failed": REQUIRED,
    })

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        if "{{" not in value and not TARGET.match(value):
            raise ValueError(f"transfer target must be a sip: URI or an E.164 number, got {value!r}")
        return value

    async def run(self, ctx: RunContext) -> str:
        target = ctx.render(self.target).strip()
        shown = ctx.render_shown(self.target).strip()
        if not TARGET.match(target):
            raise FlowError(f"transfer target {shown!r} is not a sip: URI or an E.164 number")
        result = await ctx.channel.transfer(target, self.ring_timeout)
        ctx.emit("ivr.transfer", {"target": shown, "result": result})
        return result


class EnqueueNode(NodeBase):
    """Hand the caller to a queue. ``answered`` ends the flow (outcome ``answered``) unless mapped;
    ``full``/``closed``/``left`` fall back to ``timeout``."""

    type: Literal["enqueue"]
    queue: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    priority: int = Field(default=0, ge=0, le=100)
    skills: list[str] = Field(default_factory=list)
    requirements: str | None = None
    data: dict[str, Template] = Field(default_factory=dict)
    timeout: float = Field(default=300.0, gt=0, le=86_400)
    hold_prompt: Prompts = ()
    outcomes = MappingProxyType({
        "answered": OutcomeRule("ends", flow_outcome="answered"),
        "timeout": REQUIRED,
        "full": OutcomeRule("fallback", fallback="timeout"),
        "closed": OutcomeRule("fallback", fallback="timeout"),
        "left": OutcomeRule("fallback", fallback="timeout"),
    })

    @field_validator("requirements")
    @classmethod
    def _requirements_compile(cls, value: str | None) -> str | None:
        if value is not None:
            compile_requirements(value)  # RequirementError (a ValueError) names the column
        return value

    @field_validator("skills")
    @classmethod
    def _skill_names(cls, value: list[str]) -> list[str]:
        for name in value:
            compile_requirements(name)
        return value

    async def run(self, ctx: RunContext) -> str:
        shown = {k: v for k, v in ctx.variables.items() if k not in ctx.secrets.names}
        spec = EnqueueSpec(
            priority=self.priority,
            skills=tuple(self.skills),
            timeout=self.timeout,
            hold_prompts=tuple(ctx.prompt_specs(self.hold_prompt)),
            variables=shown,
            requirements=self.requirements,
            data={key: ctx.render_shown(value) for key, value in self.data.items()},  # secrets stay masked
        )
        ctx.emit("ivr.enqueue", {"queue": self.queue, "priority": self.priority, "skills": self.skills,
                                 "requirements": self.requirements})
        result = await ctx.channel.enqueue(self.queue, spec)
        ctx.emit("ivr.enqueue", {"queue": self.queue, "result": result})
        return result


class HangupNode(NodeBase):
    """Play an optional goodbye, then end the call (``sip_code`` for a rejection-style end)."""

    type: Literal["hangup"]
    prompt: Prompts = ()
    sip_code: int | None = Field(default=None, ge=400, le=699)
    terminal = True
    outcomes = MappingProxyType({})

    async def run(self, ctx: RunContext) -> FlowEnd:
        if self.prompt:
            await ctx.play(self.prompt, barge_in=False)
        await ctx.channel.hangup(self.sip_code)
        return FlowEnd("hangup")
