"""Semantic validation of parsed flows: graph, references, expressions, prompts, cross-file subflows.

Every problem carries ``file:line:column``. Errors make a flow unloadable; warnings do not.
"""

from __future__ import annotations

import types
import typing
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel

from helpline.ivr.expressions import (
    ExpressionError,
    check_template,
    compile_expression,
    template_literal,
)
from helpline.ivr.input_policy import InputPolicy
from helpline.ivr.loader import ParsedFlow, parse_file
from helpline.ivr.markers import Marked, MarkKind
from helpline.ivr.model import REQUIRED, Loc, NodeBase
from helpline.ivr.nodes.input import InputNode, MenuNode
from helpline.ivr.nodes.logic import GotoNode
from helpline.ivr.nodes.recording import GRANTED, RECORDING_ACTIONS, ConsentNode, RecordingNode
from helpline.ivr.nodes.subflow import ReturnNode, SubflowNode
from helpline.ivr.problems import Problem


def _field_annotation(model: type[BaseModel], name: str) -> Any:
    info = model.model_fields[name]
    return Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation


def _pick_member(annotation: Any, value: Any) -> Any:
    """For a union annotation, the member that fits ``value``'s runtime shape."""
    for member in typing.get_args(annotation):
        base = typing.get_args(member)[0] if typing.get_origin(member) is Annotated else member
        origin = typing.get_origin(base) or base
        if isinstance(origin, type) and isinstance(value, origin):
            return member
    return None


def marked_values(value: Any, annotation: Any, loc: Loc) -> Iterator[tuple[Loc, MarkKind, str]]:
    """Every string in ``value`` whose annotation carries a :class:`Marked` kind, with its location."""
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from marked_values(
                getattr(value, name), _field_annotation(type(value), name), (*loc, name)
            )
        return
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        base, *meta = typing.get_args(annotation)
        kinds = [m.kind for m in meta if isinstance(m, Marked)]
        if kinds and isinstance(value, str):
            yield loc, kinds[0], value
            return
        yield from marked_values(value, base, loc)
    elif origin in (typing.Union, types.UnionType):
        member = _pick_member(annotation, value)
        if member is not None:
            yield from marked_values(value, member, loc)
    elif isinstance(value, dict) and origin is dict:
        for key, item in value.items():
            yield from marked_values(item, typing.get_args(annotation)[1], (*loc, key))
    elif isinstance(value, list | tuple) and origin in (list, tuple):
        item_type = typing.get_args(annotation)[0]
        for i, item in enumerate(value):
            yield from marked_values(item, item_type, (*loc, i))


class FlowChecker:
    """Checks one parsed flow against the set of known flow ids."""

    def __init__(self, parsed: ParsedFlow, known_flows: dict[str, ParsedFlow]) -> None:
        self.parsed = parsed
        self.known = known_flows
        assert parsed.document is not None
        self.doc = parsed.document
        self.nodes: dict[str, NodeBase] = {}
        self.locs: dict[str, Loc] = {}

    def run(self) -> None:
        self._index()
        self._references()
        self._outcomes()
        self._reachability()
        self._loops()
        self._menus()
        self._subflow_outcomes()
        self._recording_consent()

    def _index(self) -> None:
        raw = self.parsed.marks.data["nodes"] if self.parsed.marks else []
        seen: dict[str, int] = {}
        for i, item in enumerate(raw):
            node_id = item.get("id") if isinstance(item, dict) else None
            if isinstance(node_id, str) and node_id in seen:
                self.parsed.report(("nodes", i, "id"), "duplicate-node-id",
                                   f"duplicate node id {node_id!r} (first at nodes[{seen[node_id]}])")
            elif isinstance(node_id, str):
                seen[node_id] = i
        for node in self.parsed.nodes:
            if node.id not in self.nodes:
                self.nodes[node.id] = node
                self.locs[node.id] = self.parsed.node_locs[node.id]

    def _raw_ids(self) -> set[str]:
        """Ids of nodes that failed schema validation still count as existing targets."""
        raw = self.parsed.marks.data.get("nodes", []) if self.parsed.marks else []
        return {n["id"] for n in raw if isinstance(n, dict) and isinstance(n.get("id"), str)}

    def _all_marked(self) -> Iterator[tuple[Loc, MarkKind, str]]:
        for name in type(self.doc).model_fields:
            if name != "nodes":
                yield from marked_values(getattr(self.doc, name), _field_annotation(type(self.doc), name),
                                         (name,))
        for node in self.nodes.values():
            yield from marked_values(node, type(node), self.locs[node.id])

    def _references(self) -> None:
        report = self.parsed.report
        for loc, kind, value in self._all_marked():
            if kind == "node_ref" and value not in self.nodes and value not in self._raw_ids():
                report(loc, "missing-target", f"target {value!r} is not a node in this flow")
            elif kind == "prompt_id" and value not in self.doc.prompts:
                report(loc, "unknown-prompt", f"unknown prompt id {value!r}")
            elif kind == "prompt_file" and "{{" in value:
                self._templated_prompt_file(loc, value)
            elif kind == "prompt_file":
                if not (self.parsed.path.parent / value).is_file():
                    report(loc, "missing-prompt-file", f"prompt file {value!r} does not exist")
            elif kind == "schedule_ref" and value not in self.doc.schedules:
                report(loc, "unknown-schedule", f"unknown schedule {value!r}")
            elif kind == "flow_ref" and value not in self.known:
                report(loc, "unknown-subflow", f"unknown subflow id {value!r}")
            elif kind in ("expr", "template"):
                try:
                    compile_expression(value) if kind == "expr" else check_template(value)
                except ExpressionError as exc:
                    report(loc, "bad-expression", f"bad expression: {exc.message}", offset=exc.offset)

    def _templated_prompt_file(self, loc: Loc, value: str) -> None:
        """A templated file path is rendered per call, so only its holes and its fixed parts can be
        checked: the rendered path must stay in the flow's directory."""
        try:
            check_template(value)
        except ExpressionError as exc:
            self.parsed.report(loc, "bad-expression", f"bad expression: {exc.message}", offset=exc.offset)
            return
        fixed = template_literal(value)
        if fixed.startswith(("/", "\\")) or ".." in fixed.replace("\\", "/").split("/"):
            self.parsed.report(loc, "bad-prompt-file", f"templated prompt file {value!r} must be a path "
                               "inside the flow's directory (no leading '/', no '..')")

    def _outcomes(self) -> None:
        defaults = self.doc.outcome_defaults
        for node in self.nodes.values():
            if node.terminal:
                if node.next is not None:
                    what = "the call" if node.type == "hangup" else "the flow"
                    self.parsed.report((*self.locs[node.id], "next"), "next-on-terminal",
                                       f"{node.type} ends {what}; it takes no next", key=True)
                continue
            rules = node.outcome_rules(self.doc.input_defaults)
            routed = {outcome: loc for outcome, _, loc in node.routes()}
            loc = self.locs[node.id]
            for outcome, route_loc in routed.items():
                if outcome not in rules:
                    where = (*loc, *route_loc)
                    if outcome == "next" and isinstance(node.next, str):
                        names = ", ".join(rules)
                        self.parsed.report(where, "unknown-outcome",
                                           f"{node.type} node {node.id!r} has outcomes ({names}); "
                                           "map them with next: {outcome: node}")
                    else:
                        self.parsed.report(where, "unknown-outcome", f"{node.type} node {node.id!r} has no "
                                           f"outcome {outcome!r} (known: {', '.join(rules) or 'none'})",
                                           key=True)
            for outcome, rule in rules.items():
                if rule != REQUIRED or outcome in routed or outcome in defaults:
                    continue
                if outcome == "next":
                    self.parsed.report(loc, "dead-end", f"{node.type} node {node.id!r} leads nowhere: "
                                       "add next: <node id>")
                else:
                    self.parsed.report(loc, "unhandled-outcome",
                                       f"{node.type} node {node.id!r} does not handle outcome {outcome!r}")

    def _edges(self, node: NodeBase) -> list[str]:
        if node.terminal:
            return []  # a terminal node's stray next is reported once, as next-on-terminal
        return [target for _, target, _ in node.routes() if target in self.nodes]

    def _reachability(self) -> None:
        roots = [self.doc.flow.entry, *filter(None, [self.doc.on_error]), *self.doc.outcome_defaults.values()]
        seen: set[str] = set()
        stack = [r for r in roots if r in self.nodes]
        while stack:
            node_id = stack.pop()
            if node_id in seen:
                continue
            seen.add(node_id)
            node = self.nodes[node_id]
            stack.extend(self._edges(node))
            stack.extend(t for t, _ in node.static_targets() if t in self.nodes)
        for node_id, loc in self.locs.items():
            if node_id not in seen:
                self.parsed.report(loc, "unreachable", f"node {node_id!r} is unreachable", "warning")

    def _loops(self) -> None:
        """Cycles that neither wait for the caller nor pass a ``goto`` with ``max_visits``."""
        def guard(node: NodeBase) -> bool:
            return node.waits_for_caller or (isinstance(node, GotoNode) and node.max_visits is not None)

        graph = {nid: [t for t in self._edges(n) if not guard(self.nodes[t])]
                 for nid, n in self.nodes.items() if not guard(n)}
        for component in _strongly_connected(graph):
            if len(component) == 1 and component[0] not in graph.get(component[0], []):
                continue
            ordered = sorted(component, key=lambda nid: self.locs[nid])
            culprit = next((nid for nid in ordered if isinstance(self.nodes[nid], GotoNode)), ordered[0])
            cycle = " -> ".join(ordered)
            self.parsed.report(self.locs[culprit], "unguarded-loop",
                               f"unguarded loop ({cycle}): add max_visits to a goto or pass an input node")

    def _menus(self) -> None:
        for node in self.nodes.values():
            if not isinstance(node, InputNode):
                continue
            policy = InputPolicy.resolve(node, self.doc.input_defaults)
            if not isinstance(node, MenuNode):
                continue
            seen: dict[str, int] = {}
            for i, option in enumerate(node.options):
                loc = (*self.locs[node.id], "options", i, "key")
                if option.key in seen:
                    self.parsed.report(loc, "duplicate-dtmf-key",
                                       f"menu {node.id!r}: key {option.key!r} is already used by option "
                                       f"{seen[option.key]}")
                seen.setdefault(option.key, i)
                for special, what in ((policy.repeat_key, "repeat"), (policy.zero_out_key, "zero-out")):
                    if option.key == special:
                        self.parsed.report(loc, "duplicate-dtmf-key",
                                           f"menu {node.id!r}: key {option.key!r} shadows the {what} key",
                                           "warning")

    def _subflow_outcomes(self) -> None:
        for node in self.nodes.values():
            if not isinstance(node, SubflowNode) or node.flow not in self.known:
                continue
            child = self.known[node.flow]
            returned = sorted({n.outcome for n in child.nodes if isinstance(n, ReturnNode)})
            if isinstance(node.next, str):
                continue  # next: <node> takes every returned outcome
            routed = {outcome for outcome, _, _ in node.routes()}
            for outcome in returned:
                if outcome not in routed and outcome not in self.doc.outcome_defaults:
                    self.parsed.report(self.locs[node.id], "unhandled-outcome",
                                       f"subflow node {node.id!r} does not handle outcome {outcome!r} "
                                       f"returned by flow {node.flow!r}")

    def _flow_edges(self, node: NodeBase) -> Iterator[tuple[str, str, Loc | None]]:
        """``(outcome, target, route location)`` for every way out of ``node`` at run time: its routes,
        flow ``outcome_defaults`` for what it leaves unmapped, and the error handler any node may take."""
        routed: set[str] = set()
        if not node.terminal:
            for outcome, target, loc in node.routes():
                routed.add(outcome)
                yield outcome, target, loc
            for outcome in node.outcome_rules(self.doc.input_defaults):
                fallback = self.doc.outcome_defaults.get(outcome)
                if outcome not in routed and fallback is not None:
                    yield outcome, fallback, None
        handler = node.on_error or self.doc.on_error
        if handler is not None:
            yield "error", handler, None

    def _unconsented_paths(self, start: str) -> dict[str, list[str]]:
        """For each recording start/resume reachable from ``start`` without a consent ``granted`` on
        the way, the shortest such path (node ids). Subflow calls are opaque: they neither grant nor
        record for this flow. A consent node's other outcomes take a granted state away again."""
        parents: dict[tuple[str, bool], tuple[str, bool] | None] = {(start, False): None}
        queue = deque([(start, False)])
        found: dict[str, list[str]] = {}
        while queue:
            state = queue.popleft()
            node_id, granted = state
            node = self.nodes[node_id]
            if not granted and isinstance(node, RecordingNode) and node.action in RECORDING_ACTIONS:
                path: list[str] = []
                at: tuple[str, bool] | None = state
                while at is not None:
                    path.append(at[0])
                    at = parents[at]
                found.setdefault(node_id, path[::-1])
            for outcome, target, _ in self._flow_edges(node):
                if target not in self.nodes:
                    continue
                after = (outcome == GRANTED) if isinstance(node, ConsentNode) else granted
                if (target, after) not in parents:
                    parents[(target, after)] = state
                    queue.append((target, after))
        return found

    def _recording_consent(self) -> None:
        """The static proof: recording starts (or resumes) only after a consent node's ``granted``."""
        if not any(isinstance(n, RecordingNode) for n in self.nodes.values()):
            return
        entry = self.doc.flow.entry
        if entry in self.nodes:
            for node_id, path in self._unconsented_paths(entry).items():
                action = self.nodes[node_id]
                assert isinstance(action, RecordingNode)
                self.parsed.report(self.locs[node_id], "recording-without-consent",
                                   f"recording node {node_id!r} can {action.action} recording without a "
                                   f"consent node's 'granted' on the way: {' -> '.join(path)}")
        for node in self.nodes.values():
            if not isinstance(node, ConsentNode):
                continue
            for outcome, target, loc in self._flow_edges(node):
                if outcome == GRANTED or target not in self.nodes:
                    continue
                reached = self._unconsented_paths(target)
                if reached:
                    node_id, path = min(reached.items(), key=lambda item: len(item[1]))
                    where = (*self.locs[node.id], *loc) if loc is not None else self.locs[node.id]
                    self.parsed.report(where, "recording-after-decline",
                                       f"consent node {node.id!r}: outcome {outcome!r} leads to recording "
                                       f"{self.nodes[node_id].id!r}: {' -> '.join([node.id, *path])}",
                                       "warning", key=loc is not None)


def _strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative so deep flows cannot hit the recursion limit."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, child_i = work.pop()
            if child_i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            children = graph.get(node, [])
            if child_i < len(children):
                work.append((node, child_i + 1))
                child = children[child_i]
                if child not in index:
                    work.append((child, 0))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                out.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return out


def _has_errors(item: ParsedFlow) -> bool:
    return item.document is None or any(p.is_error for p in item.problems)


def _subflow_calls(item: ParsedFlow) -> Iterator[tuple[SubflowNode, Loc]]:
    seen: set[str] = set()
    for node in item.nodes:
        if isinstance(node, SubflowNode) and node.id not in seen:
            seen.add(node.id)
            yield node, item.node_locs[node.id]


def _check_subflow_calls(parsed: list[ParsedFlow], known: dict[str, ParsedFlow]) -> None:
    """Checks that need every file's own verdict first.

    A call to a flow with errors is an error of the caller too (the server would not load the
    callee, so the call would fail at run time), repeated until no new caller turns invalid. A mapped
    outcome that a valid callee never returns is a warning: the route is dead, but harmless.
    """
    reported: set[tuple[int, str]] = set()
    changed = True
    while changed:
        changed = False
        for item in parsed:
            if item.document is None:
                continue
            for node, loc in _subflow_calls(item):
                child = known.get(node.flow)
                if child is None or child is item or not _has_errors(child):
                    continue
                if (id(item), node.id) in reported:
                    continue
                reported.add((id(item), node.id))
                changed = True
                errors = sum(p.is_error for p in child.problems)
                item.report((*loc, "flow"), "invalid-subflow",
                            f"subflow {node.flow!r} is invalid ({errors} error(s) in {child.path})")
    for item in parsed:
        if item.document is None or known.get(item.document.flow.id) is not item:
            continue
        for node, loc in _subflow_calls(item):
            child = known.get(node.flow)
            if child is None or _has_errors(child) or isinstance(node.next, str):
                continue
            returned = sorted({n.outcome for n in child.nodes if isinstance(n, ReturnNode)})
            for outcome, _, route_loc in node.routes():
                if outcome not in returned:
                    item.report((*loc, *route_loc), "unknown-outcome",
                                f"subflow node {node.id!r} maps outcome {outcome!r}, which flow "
                                f"{node.flow!r} never returns (it returns: {', '.join(returned) or 'none'})",
                                "warning", key=True)


def check_flows(parsed: list[ParsedFlow]) -> None:
    """Run semantic checks across a set of parsed files, appending to each file's problems."""
    known: dict[str, ParsedFlow] = {}
    for item in parsed:
        item.problems = list(item.parse_problems)
    for item in parsed:
        if item.document is None:
            continue
        flow_id = item.document.flow.id
        if flow_id in known:
            item.report(("flow", "id"), "duplicate-flow-id",
                        f"flow id {flow_id!r} is also defined in {known[flow_id].path}")
            continue
        known[flow_id] = item
    for item in parsed:
        if item.document is not None:
            FlowChecker(item, known).run()
    _check_subflow_calls(parsed, known)
    for item in parsed:
        item.problems.sort(key=lambda p: (p.line, p.column))


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, directories as their ``*.yaml``/``*.yml`` files."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(sorted([*path.glob("*.yaml"), *path.glob("*.yml")]))
        else:
            out.append(path)
    return out


def parse_paths(paths: Iterable[str | Path]) -> list[ParsedFlow]:
    parsed = [parse_file(path) for path in expand_paths(paths)]
    check_flows(parsed)
    return parsed


def validate_paths(paths: Iterable[str | Path]) -> list[Problem]:
    """Every problem in the given flow files (and directories).

    Subflow ids resolve across the given files and the ``*.yaml``/``*.yml`` files beside them, as the
    server loads a whole directory; the neighbours' own problems are not reported unless they were
    given too.
    """
    named = expand_paths(paths)
    wanted = {path.resolve() for path in named}
    folders = sorted({path.parent for path in named})
    neighbours = [p for p in expand_paths(folders) if p.resolve() not in wanted]
    parsed = [parse_file(path) for path in named]
    check_flows([*parsed, *(parse_file(path) for path in dict.fromkeys(neighbours))])
    return [problem for item in parsed for problem in item.problems]
