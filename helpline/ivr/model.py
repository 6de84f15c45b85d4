"""The flow model: flow-level settings, the node base class and the node-type registry.

Each node type is one pydantic model (params) with its behaviour in ``run`` (like jambonz tasks). The
registry :data:`NODE_TYPES` is filled from the models themselves: subclassing :class:`NodeBase` with a
``type: Literal["name"]`` field registers the class, so nothing keeps a hand-written switch.
"""

from __future__ import annotations

import typing
from abc import abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from helpline.ivr.markers import Expr, FlowRef, Marked, NodeRef, ScheduleRef, Template
from helpline.ivr.prompts import Prompt, Prompts
from helpline.ivr.schedule import Schedule, check_timezone

if TYPE_CHECKING:
    from helpline.ivr.context import RunContext

Loc = tuple[str | int, ...]
__all__ = ["Expr", "FlowRef", "Marked", "NodeRef", "ScheduleRef", "Template"]


NodeId = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")]
VarName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")]


def _key_to_str(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


DtmfKey = Annotated[str, BeforeValidator(_key_to_str), Field(pattern=r"^[0-9*#]$")]


@dataclass(frozen=True, slots=True)
class OutcomeRule:
    """What happens when a node produces an outcome that its ``next`` does not map.

    ``required``: the flow must map it (or a flow ``outcome_defaults`` entry must).
    ``ends``: the flow ends with ``flow_outcome`` (e.g. a connected transfer).
    ``fallback``: route as outcome ``fallback`` instead (``holiday`` → ``closed``).
    ``optional``: reaching it unmapped is a runtime error, handled by ``on_error``.
    """

    kind: Literal["required", "ends", "fallback", "optional"] = "required"
    flow_outcome: str | None = None
    fallback: str | None = None


REQUIRED = OutcomeRule()


@dataclass(frozen=True, slots=True)
class FlowEnd:
    """Returned by a node to end the current flow (hangup, transfer connected, return ...)."""

    outcome: str
    outputs: Mapping[str, Any] = field(default_factory=dict)
    returned: bool = False


class ZeroOut(BaseModel):
    """The key that leaves any input node for a person, and the outcome it produces."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    key: DtmfKey
    outcome: NodeId = "operator"


class InputSettings(BaseModel):
    """Input policy knobs, inherited flow (``input_defaults``) → node; ``None`` means inherit.

    ``false`` for ``repeat_key``/``zero_out`` switches an inherited key off for one node.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    first_digit_timeout: float | None = Field(default=None, gt=0, le=120)
    inter_digit_timeout: float | None = Field(default=None, gt=0, le=60)
    max_noinput: int | None = Field(default=None, ge=1, le=20)
    max_nomatch: int | None = Field(default=None, ge=1, le=20)
    noinput_prompts: Prompts | None = None
    nomatch_prompts: Prompts | None = None
    repeat_key: DtmfKey | Literal[False] | None = None
    zero_out: ZeroOut | Literal[False] | None = None
    barge_in: bool | None = None


class NodeBase(BaseModel):
    """Fields every node has. Subclasses add typed params, outcome rules and ``run``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: NodeId
    type: str
    description: str = ""
    on_error: NodeRef | None = None
    next: NodeRef | dict[str, NodeRef] | None = None
    #: While the call is inside this node (for ``subflow``: the whole child flow) recording is
    #: paused and the caller's digits are masked in events and logs; input values are kept secret.
    sensitive: bool = False

    #: Outcomes this type produces, before any per-instance additions (menu options, branches).
    outcomes: ClassVar[Mapping[str, OutcomeRule]] = MappingProxyType({"next": REQUIRED})
    #: Input nodes wait for the caller, which is what makes a loop through them safe.
    waits_for_caller: ClassVar[bool] = False
    #: Terminal nodes end the flow and have no outcomes.
    terminal: ClassVar[bool] = False

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        annotation = cls.model_fields["type"].annotation
        if typing.get_origin(annotation) is Literal:
            (name,) = typing.get_args(annotation)
            if name in NODE_TYPES and NODE_TYPES[name] is not cls:
                raise TypeError(f"node type {name!r} registered twice")
            NODE_TYPES[name] = cls

    def outcome_rules(self, defaults: InputSettings) -> dict[str, OutcomeRule]:
        """Every outcome this node can produce; ``defaults`` are the flow's input defaults."""
        return dict(self.outcomes)

    def routes(self) -> Iterator[tuple[str, str, Loc]]:
        """``(outcome, target node, location of the target)`` for every mapped outcome."""
        if isinstance(self.next, str):
            yield "next", self.next, ("next",)
        elif isinstance(self.next, dict):
            for outcome, target in self.next.items():
                yield outcome, target, ("next", outcome)

    def static_targets(self) -> Iterator[tuple[str, Loc]]:
        """Node references that are not outcome routes (``goto`` target, ``on_error``)."""
        if self.on_error:
            yield self.on_error, ("on_error",)

    def route_for(self, outcome: str) -> str | None:
        for name, node_id, _ in self.routes():
            if name == outcome:
                return node_id
        return None

    @abstractmethod
    async def run(self, ctx: RunContext) -> str | FlowEnd:
        """Do the node's work and return the outcome taken (or how the flow ends)."""


NODE_TYPES: dict[str, type[NodeBase]] = {}


class FlowMeta(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: NodeId
    version: Annotated[str | None, BeforeValidator(_key_to_str)] = None
    description: str = ""
    entry: NodeRef
    timezone: str = "UTC"
    language: str = "en"

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        return check_timezone(value)


class FlowDocument(BaseModel):
    """A flow file's top level. ``nodes`` stay raw here: each is validated by its own type's model."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    flow: FlowMeta
    prompts: dict[NodeId, Prompt] = Field(default_factory=dict)
    schedules: dict[NodeId, Schedule] = Field(default_factory=dict)
    input_defaults: InputSettings = InputSettings()
    on_error: NodeRef | None = None
    outcome_defaults: dict[str, NodeRef] = Field(default_factory=dict)
    variables: dict[VarName, Union[str, int, float, bool, None]] = Field(default_factory=dict)  # noqa: UP007
    nodes: list[dict[str, Any]] = Field(min_length=1)


@dataclass(frozen=True, eq=False)
class Flow:
    """An immutable, validated flow snapshot. ``library`` holds the subflows of the same generation."""

    document: FlowDocument
    nodes: Mapping[str, NodeBase]
    version: str
    source: Path
    library: Mapping[str, Flow] = field(default_factory=dict, repr=False)

    @property
    def id(self) -> str:
        return self.document.flow.id

    @property
    def entry(self) -> str:
        return self.document.flow.entry

    @property
    def base_dir(self) -> Path:
        return self.source.parent
