"""Immutable :class:`Flow` snapshots from validated files, subflows resolved at snapshot time."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from types import MappingProxyType

from helpline.ivr.loader import ParsedFlow
from helpline.ivr.model import Flow
from helpline.ivr.problems import Problem
from helpline.ivr.validate import parse_paths


class FlowInvalid(Exception):
    """A flow (or a file it needs) has errors; ``problems`` say where."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def is_loadable(parsed: ParsedFlow) -> bool:
    return parsed.document is not None and not any(p.is_error for p in parsed.problems)


def build_flows(parsed: Iterable[ParsedFlow]) -> dict[str, Flow]:
    """One generation of snapshots: every loadable flow, sharing one read-only library of the set.

    A flow whose subflow is missing from the generation fails at that node at runtime (``on_error``);
    the validator has already reported it, so it would not have been loadable in the first place.
    """
    library: dict[str, Flow] = {}
    view = MappingProxyType(library)
    for item in parsed:
        if not is_loadable(item):
            continue
        assert item.document is not None
        meta = item.document.flow
        version = f"{meta.version}+{item.content_hash}" if meta.version else item.content_hash
        nodes = MappingProxyType({node.id: node for node in item.nodes})
        library[meta.id] = Flow(item.document, nodes, version, item.path.resolve(), view)
    return dict(library)


def load_flow(path: str | Path) -> Flow:
    """Load one flow file with the flows beside it (its possible subflows); raise :class:`FlowInvalid`."""
    target = Path(path).resolve()
    parsed = parse_paths([target.parent])
    if target not in {p.path.resolve() for p in parsed}:
        parsed.extend(parse_paths([target]))
    mine = next(p for p in parsed if p.path.resolve() == target)
    if not is_loadable(mine):
        raise FlowInvalid([p for p in mine.problems if p.is_error])
    flows = build_flows(parsed)
    assert mine.document is not None
    return flows[mine.document.flow.id]
