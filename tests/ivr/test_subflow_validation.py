"""Subflows as the validator sees them: ids resolved against the files beside the one validated,
callers of invalid subflows reported, and every returned outcome either mapped or taken by a plain
``next``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from helpline.ivr.cli import main
from helpline.ivr.snapshot import FlowInvalid, load_flow
from helpline.ivr.testing import arun_flow_test
from helpline.ivr.validate import validate_paths

ROOT = Path(__file__).parents[2]

CHILD = """\
nodes:
  - id: start
    type: branch
    conditions: [{when: "x == 1", next: agree}]
    default: refuse
  - id: agree
    type: return
    outcome: agreed
  - id: refuse
    type: return
    outcome: refused
"""

PARENT = """\
nodes:
  - id: start
    type: subflow
    flow: child
    inputs: {x: "1"}
    next: NEXT
  - id: after
    type: milestone
    name: after
    next: bye
  - id: other
    type: milestone
    name: other
    next: bye
  - id: bye
    type: hangup
"""


def test_validating_one_file_resolves_subflows_beside_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flow", "validate", str(ROOT / "flows" / "demo.yaml")]) == 0
    assert capsys.readouterr().out == ""


def test_a_caller_of_an_invalid_subflow_is_invalid(write_flow: Callable[..., Path]) -> None:
    child = write_flow(CHILD.replace("default: refuse", "default: nowhere"), name="child")
    parent = write_flow(PARENT.replace("NEXT", "after"), name="parent")
    problems = [p for p in validate_paths([parent]) if p.code != "unreachable"]
    assert [(p.code, p.line, p.column, p.severity) for p in problems] == [
        ("invalid-subflow", 7, 11, "error")
    ]
    assert f"subflow 'child' is invalid (1 error(s) in {child})" in problems[0].message
    with pytest.raises(FlowInvalid, match="invalid-subflow"):
        load_flow(parent)
    both = validate_paths([parent, child])
    assert {p.code for p in both if p.is_error} == {"invalid-subflow", "missing-target"}


def test_invalid_subflow_propagates_up_a_chain(write_flow: Callable[..., Path]) -> None:
    write_flow(CHILD.replace("default: refuse", "default: nowhere"), name="child")
    middle = write_flow("""\
nodes:
  - id: start
    type: subflow
    flow: child
    next: done
  - id: done
    type: return
""", name="middle")
    top = write_flow(PARENT.replace("flow: child", "flow: middle").replace("NEXT", "after"), name="top")
    assert [p.code for p in validate_paths([top]) if p.is_error] == ["invalid-subflow"]
    assert [p.code for p in validate_paths([middle])] == ["invalid-subflow"]


async def test_plain_next_on_a_subflow_takes_every_outcome(write_flow: Callable[..., Path]) -> None:
    write_flow(CHILD, name="child")
    parent = write_flow(PARENT.replace("NEXT", "after"), name="parent")
    assert [p.code for p in validate_paths([parent])] == ["unreachable"]  # node "other"
    for x, outcome in (("1", "agreed"), ("2", "refused")):
        parent.write_text(parent.read_text().replace("inputs: {x: \"1\"}", f"inputs: {{x: \"{x}\"}}"))
        t = await arun_flow_test(parent)
        t.assert_milestones("after")
        assert [e.data["outcome"] for e in t.events if e.type == "ivr.outcome"] == [outcome, "hangup"]


def test_mapped_outcomes_the_child_never_returns_are_warned(write_flow: Callable[..., Path]) -> None:
    write_flow(CHILD, name="child")
    parent = write_flow(PARENT.replace("NEXT", "{agreed: after, refused: other, agred: other}"),
                        name="parent")
    (problem,) = validate_paths([parent])
    where = (problem.code, problem.severity, problem.line, problem.column)
    assert where == ("unknown-outcome", "warning", 9, 43)  # at the key agred
    assert "maps outcome 'agred', which flow 'child' never returns (it returns: agreed, refused)" in (
        problem.message
    )
    missing = write_flow(PARENT.replace("NEXT", "{agreed: after}"), name="parent")
    (problem,) = [p for p in validate_paths([missing]) if p.code != "unreachable"]
    assert (problem.code, problem.severity, problem.line) == ("unhandled-outcome", "error", 5)
    assert "does not handle outcome 'refused' returned by flow 'child'" in problem.message
