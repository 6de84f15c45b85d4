"""Simulator transcripts for the wire-test flows (their shape is what the SIP tests rely on)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpline.ivr.testing import arun_flow_test

WIRE = Path(__file__).parents[1] / "wire_flows"


@pytest.mark.parametrize(
    ("inputs", "milestone", "tone"),
    [
        (["1"], "branch_1", "tone:1000Hz/1500ms"),
        (["2"], "branch_2", "tone:2000Hz/1500ms"),
        (["3", "4321#"], "pin_ok", None),
        (["3", "1234#"], "pin_bad", None),
        (["4"], "queue_timeout", None),
        ([], "no_input", None),
    ],
)
async def test_dtmf_branch(inputs: list[str], milestone: str, tone: str | None) -> None:
    t = await arun_flow_test(WIRE / "dtmf_branch.yaml", inputs)
    t.assert_milestones(milestone)
    t.assert_outcome("hangup")
    assert t.prompts[:2] == ["tone:440Hz/400ms", "tone:440Hz/400ms"]
    assert all(p.startswith("tone:") for p in t.prompts)
    if tone:
        assert t.prompts[-1] == tone
    if milestone == "queue_timeout":
        assert t.channel.enqueued[0][0] == "support" and t.channel.enqueued[0][1].timeout == 3


async def test_dtmf_branch_menu_timeout_is_five_seconds() -> None:
    t = await arun_flow_test(WIRE / "dtmf_branch.yaml", [], at="2026-01-01T12:00 UTC")
    assert (t.channel.now() - t.channel.at).total_seconds() == pytest.approx(0.8 + 5)


async def test_long_prompt() -> None:
    t = await arun_flow_test(WIRE / "long_prompt.yaml", ["1"])
    assert t.prompts == ["tone:600Hz/20000ms"]
    assert t.events[1].type == "ivr.node_entered"
    assert next(e for e in t.events if e.type == "ivr.prompt_played").data["barge_in"] is False
    t.assert_outcome("hangup")


@pytest.mark.parametrize(("inputs", "milestone"), [(["1122#"], "got_1122"), (["1123#"], "got_other"),
                                                    (["1122"], "got_1122"), ([], "got_other")])
async def test_repeat_digits(inputs: list[str], milestone: str) -> None:
    t = await arun_flow_test(WIRE / "repeat_digits.yaml", inputs)
    t.assert_milestones(milestone)
