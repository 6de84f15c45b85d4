"""Validator wording and positions: a terminal node's ``next`` is one clear error, and problems on
quoted values point at the value, not one column into it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from helpline.ivr.validate import validate_paths


@pytest.mark.parametrize(("kind", "message"), [("hangup", "hangup ends the call; it takes no next"),
                                               ("return", "return ends the flow; it takes no next")])
def test_next_on_a_terminal_node_is_one_clear_error(
    write_flow: Callable[..., Path], kind: str, message: str
) -> None:
    path = write_flow(f"""\
nodes:
  - id: start
    type: play
    prompt: {{tts: hi}}
    next: bye
  - id: bye
    type: {kind}
    next: start
""")
    (problem,) = validate_paths([path])
    assert (problem.code, problem.line, problem.column, problem.message) == (
        "next-on-terminal", 11, 5, message
    )


@pytest.mark.parametrize("quote", ['"', "'", ""])
def test_problem_on_a_quoted_value_points_at_its_start(write_flow: Callable[..., Path], quote: str) -> None:
    path = write_flow(f"""\
nodes:
  - id: start
    type: play
    prompt: {{tts: hi}}
    next: {quote}nowhere{quote}
""")
    (problem,) = validate_paths([path])
    assert (problem.code, problem.line, problem.column) == ("missing-target", 8, 11)


def test_expression_offset_in_a_quoted_value_skips_the_quote(write_flow: Callable[..., Path]) -> None:
    path = write_flow("""\
nodes:
  - id: start
    type: set
    values: {x: "1 + a.b"}
    next: bye
  - id: bye
    type: hangup
""")
    (problem,) = validate_paths([path])
    assert (problem.code, problem.line, problem.column) == ("bad-expression", 7, 18 + len("1 + "))
