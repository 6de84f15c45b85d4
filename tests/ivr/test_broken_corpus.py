"""Each broken flow names, in its first line, where the validator must report it and which class."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpline.ivr.snapshot import FlowInvalid, load_flow
from helpline.ivr.validate import validate_paths

BROKEN = sorted((Path(__file__).parent / "broken").glob("*.yaml"))
EXPECT = re.compile(r"^# expect: (\d+):(\d+) ([a-z-]+)(?: (warning))?$")


def test_corpus_is_not_empty() -> None:
    assert len(BROKEN) >= 15


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_flow_is_reported_at_the_right_place(path: Path) -> None:
    match = EXPECT.match(path.read_text().splitlines()[0])
    assert match, f"{path.name}: first line must be '# expect: LINE:COL CODE [warning]'"
    line, column, code, warning = int(match[1]), int(match[2]), match[3], match[4]
    problems = validate_paths([path])
    hits = [p for p in problems if p.code == code]
    assert hits, f"no {code} problem; got:\n" + "\n".join(map(str, problems))
    assert (hits[0].line, hits[0].column) == (line, column), str(hits[0])
    assert hits[0].severity == ("warning" if warning else "error")
    assert str(hits[0]).startswith(f"{path}:{line}:{column}: {hits[0].severity}: ")
    if not warning:
        with pytest.raises(FlowInvalid):
            load_flow(path)


def test_unknown_type_suggests_the_closest_name() -> None:
    (problem,) = validate_paths([Path(__file__).parent / "broken" / "unknown_type.yaml"])
    assert "did you mean 'hangup'?" in problem.message


def test_warnings_do_not_stop_loading() -> None:
    flow = load_flow(Path(__file__).parent / "broken" / "unreachable.yaml")
    assert flow.id == "unreachable"


def test_sample_and_wire_flows_are_clean() -> None:
    root = Path(__file__).parents[2]
    assert validate_paths([root / "flows", root / "tests" / "wire_flows"]) == []
