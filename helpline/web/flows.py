"""The flows in service, as the API shows them: which version of each flow new calls get, and which
file changes were rejected and why (the registry keeps serving the last good version of those)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pydantic import BaseModel, Field

from helpline.ivr.registry import FlowStatus

FlowCatalog = Callable[[], Sequence[FlowStatus]]


class FlowOut(BaseModel):
    flow_id: str | None = Field(description="Flow id; null when no version of this file is in service")
    version: str | None = Field(description="Version new calls get: the flow's version plus a content hash")
    path: str
    description: str
    problems: list[str] = Field(description="Why the file's latest change was rejected, file:line:col first")


class FlowList(BaseModel):
    items: list[FlowOut]


def flow_list(catalog: FlowCatalog) -> FlowList:
    return FlowList(items=[
        FlowOut(flow_id=s.flow_id, version=s.version, path=s.path, description=s.description,
                problems=list(s.problems))
        for s in catalog()
    ])  # fmt: skip
