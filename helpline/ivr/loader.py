"""From a YAML file to a typed flow document and node models, with positioned problems.

Flow-level keys are validated by :class:`FlowDocument`; each node by the model its ``type`` selects in
:data:`NODE_TYPES`, so an unknown type is reported as such (with a suggestion) rather than as a wall
of union errors.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

import helpline.ivr.nodes  # noqa: F401  (registers node types)
from helpline.ivr.model import NODE_TYPES, FlowDocument, Loc, NodeBase
from helpline.ivr.problems import Problem, Severity
from helpline.ivr.yaml_loader import MarkedDocument, Position, load_marked


@dataclass(slots=True)
class ParsedFlow:
    """One file after parsing and schema validation; ``document`` is ``None`` when that failed."""

    path: Path
    text: str
    marks: MarkedDocument | None = None
    document: FlowDocument | None = None
    nodes: list[NodeBase] = field(default_factory=list)
    node_locs: dict[str, Loc] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    #: Problems found while parsing; semantic checks start again from these each time they run.
    parse_problems: list[Problem] = field(default_factory=list)

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:8]

    def report(self, loc: Loc, code: str, message: str, severity: Severity = "error", *,
               key: bool = False, offset: int | None = None) -> None:
        """Record a problem at ``loc``; ``offset`` is a column inside the value's text (an expression
        error), which for a quoted scalar starts after the quote."""
        pos = self.marks.position(loc, key=key) if self.marks else Position(1, 1)
        line, column = pos.line, pos.column
        if offset is not None and self.marks is not None:
            style = self.marks.scalar_styles.get(self.marks.resolve(loc))
            column += offset + (1 if style in ("'", '"') else 0)
        self.problems.append(Problem(self.path, line, column, severity, code, message))


def _loc_text(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _report_validation(parsed: ParsedFlow, prefix: Loc, error: ValidationError) -> None:
    """Map pydantic errors back to YAML positions, skipping union-member names pydantic adds to locs."""
    assert parsed.marks is not None
    found: list[tuple[Loc, int | None, str | int | None, Any]] = []
    for item in error.errors():
        kept: list[str | int] = list(prefix)
        dangling: str | int | None = None
        first_skip: int | None = None
        for part in item["loc"]:
            probe = (*kept, part)
            if probe in parsed.marks.values:
                kept.append(part)
            elif item["type"] in ("missing", "extra_forbidden") and dangling is None:
                dangling = part
            elif first_skip is None:
                first_skip = len(kept)
        found.append((tuple(kept), first_skip, dangling, item))
    # A value that fits no member of a union gets one error per member; keep the deepest ones only.
    deepest: dict[Loc, int] = {}
    for loc, skip, _, _ in found:
        if skip is not None:
            deepest[loc[:skip]] = max(deepest.get(loc[:skip], 0), len(loc))
    reported: set[Loc] = set()
    for loc, skip, dangling, item in found:
        if skip is not None and len(loc) < deepest[loc[:skip]]:
            continue
        if loc in reported:
            continue
        reported.add(loc)
        message = item["msg"]
        if item["type"] == "missing":
            message = f"missing required field {dangling!r}"
        elif item["type"] == "extra_forbidden":
            message = f"unknown field {loc[-1]!r}"
        where = _loc_text(loc)
        parsed.report(loc, "schema", f"{where}: {message}" if where else message,
                      key=item["type"] == "extra_forbidden")


def parse_text(path: Path, text: str) -> ParsedFlow:
    """Parse and schema-check one flow file's text."""
    parsed = ParsedFlow(path=path, text=text)
    _parse_into(parsed)
    parsed.parse_problems = list(parsed.problems)
    return parsed


def _parse_into(parsed: ParsedFlow) -> None:
    path, text = parsed.path, parsed.text
    try:
        parsed.marks = load_marked(text, str(path))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = f"YAML syntax error: {exc.problem or exc}"
        parsed.problems.append(Problem(path, line, column, "error", "yaml-syntax", message))
        return
    except yaml.YAMLError as exc:
        parsed.problems.append(Problem(path, 1, 1, "error", "yaml-syntax", f"YAML error: {exc}"))
        return
    for loc, pos in parsed.marks.duplicate_keys:
        parsed.problems.append(
            Problem(path, pos.line, pos.column, "error", "duplicate-key", f"duplicate key {loc[-1]!r}")
        )
    data = parsed.marks.data
    if not isinstance(data, dict):
        parsed.report((), "schema", "a flow file must be a mapping with 'flow' and 'nodes'")
        return
    try:
        parsed.document = FlowDocument.model_validate(data)
    except ValidationError as exc:
        _report_validation(parsed, (), exc)
    raw_nodes = data.get("nodes")
    if isinstance(raw_nodes, list):
        for i, raw in enumerate(raw_nodes):
            node = _parse_node(parsed, i, raw)
            if node is not None:
                parsed.nodes.append(node)
                parsed.node_locs.setdefault(node.id, ("nodes", i))


def _parse_node(parsed: ParsedFlow, index: int, raw: Any) -> NodeBase | None:
    loc: Loc = ("nodes", index)
    if not isinstance(raw, dict):
        parsed.report(loc, "schema", f"nodes[{index}]: a node must be a mapping with id and type")
        return None
    kind = raw.get("type")
    if kind is None:
        parsed.report(loc, "schema", f"nodes[{index}]: missing required field 'type'")
        return None
    cls = NODE_TYPES.get(str(kind))
    if cls is None:
        close = difflib.get_close_matches(str(kind), NODE_TYPES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(sorted(NODE_TYPES))})"
        parsed.report((*loc, "type"), "unknown-node-type", f"unknown node type {kind!r}{hint}")
        return None
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        _report_validation(parsed, loc, exc)
        return None


def parse_file(path: Path) -> ParsedFlow:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        parsed = ParsedFlow(path=path, text="")
        parsed.problems.append(Problem(path, 1, 1, "error", "io", f"cannot read flow file: {exc}"))
        parsed.parse_problems = list(parsed.problems)
        return parsed
    return parse_text(path, text)
