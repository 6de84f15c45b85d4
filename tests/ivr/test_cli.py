"""``flow validate`` and ``flow simulate`` through the argparse entry point."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpline.ivr.cli import main

ROOT = Path(__file__).parents[2]


def test_validate_reports_file_line_col(capsys: pytest.CaptureFixture[str]) -> None:
    broken = ROOT / "tests" / "ivr" / "broken" / "missing_target.yaml"
    assert main(["flow", "validate", str(broken)]) == 1
    out = capsys.readouterr().out
    assert f"{broken}:9:11: error: target 'nowhere' is not a node in this flow" in out
    assert main(["flow", "validate", str(ROOT / "flows")]) == 0


def test_simulate_prints_transcript(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["flow", "simulate", str(ROOT / "flows" / "demo.yaml"), "--input", "1",
                 "--input", "4321#", "--at", "2026-12-24T17:59 Europe/Berlin", "--var", "api_base="])
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("flow demo (version 1+")
    assert "input ***" in out and "set pin = '***'" in out
    assert "4321" not in "\n".join(out)
    assert out[-1] == "outcome hangup (flow demo)"


def test_simulate_refuses_invalid_flow(capsys: pytest.CaptureFixture[str]) -> None:
    broken = ROOT / "tests" / "ivr" / "broken" / "dead_end.yaml"
    assert main(["flow", "simulate", str(broken)]) == 1
    assert "dead-end" in capsys.readouterr().err
