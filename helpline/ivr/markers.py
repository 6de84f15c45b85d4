"""Annotations that tell the validator what a string field holds (an expression, a node id ...)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

MarkKind = Literal["expr", "template", "prompt_id", "prompt_file", "node_ref", "schedule_ref", "flow_ref"]


@dataclass(frozen=True, slots=True)
class Marked:
    kind: MarkKind


Expr = Annotated[str, Marked("expr")]
Template = Annotated[str, Marked("template")]
NodeRef = Annotated[str, Marked("node_ref")]
PromptId = Annotated[str, Marked("prompt_id")]
PromptFile = Annotated[str, Marked("prompt_file")]
ScheduleRef = Annotated[str, Marked("schedule_ref")]
FlowRef = Annotated[str, Marked("flow_ref")]
