"""The static proof in ``flow validate``: no path from a flow's entry reaches a recording start (or
resume) without passing a consent node's ``granted`` outcome."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from helpline.ivr.problems import Problem
from helpline.ivr.validate import validate_paths

ROOT = Path(__file__).parents[2]
BROKEN = ROOT / "tests" / "ivr" / "broken" / "recording_without_consent.yaml"

TAIL = """\
  - id: agent
    type: enqueue
    queue: support
    next: {timeout: bye}
  - id: bye
    type: hangup
"""


def found(path: Path, code: str = "recording-without-consent") -> list[Problem]:
    return [p for p in validate_paths([path]) if p.code == code]


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_consent_before_start_is_proved(write_flow: Callable[..., Path]) -> None:
    path = write_flow("""\
nodes:
  - id: start
    type: consent
    prompt: {tts: "Press 1 to allow recording."}
    next: {granted: rec, denied: agent}
  - id: rec
    type: recording
    action: start
    next: agent
""" + TAIL)
    assert validate_paths([path]) == []


def test_start_without_consent_is_an_error_at_the_node(write_flow: Callable[..., Path]) -> None:
    path = write_flow("""\
nodes:
  - id: start
    type: play
    prompt: {tts: "hello"}
    next: rec
  - id: rec
    type: recording
    action: start
    next: agent
""" + TAIL)
    (problem,) = found(path)
    assert (problem.line, problem.column, problem.severity) == (line_of(path, "id: rec"), 5, "error")
    assert "start -> rec" in problem.message
    assert str(problem).startswith(f"{path}:{problem.line}:5: error: recording node 'rec' can start")


def test_one_unconsented_path_among_consented_ones(write_flow: Callable[..., Path]) -> None:
    (problem,) = found(BROKEN)
    assert (problem.line, problem.column) == (22, 5)
    assert problem.message.endswith("menu -> record")


def test_decline_leading_to_recording_errors_and_warns_at_the_route(write_flow: Callable[..., Path]) -> None:
    path = write_flow("""\
nodes:
  - id: start
    type: consent
    prompt: {tts: "Press 1 to allow recording."}
    next:
      granted: rec
      denied: rec
  - id: rec
    type: recording
    action: start
    next: agent
""" + TAIL)
    (error,) = found(path)
    assert "start -> rec" in error.message
    (warning,) = found(path, "recording-after-decline")
    assert warning.severity == "warning"
    assert (warning.line, warning.column) == (line_of(path, "denied: rec"), 7)
    assert "outcome 'denied' leads to recording 'rec'" in warning.message


def test_no_response_falling_back_to_denied_is_followed(write_flow: Callable[..., Path]) -> None:
    path = write_flow("""\
nodes:
  - id: start
    type: consent
    prompt: {tts: "Press 1 to allow recording."}
    next: {granted: agent, denied: resume}
  - id: resume
    type: recording
    action: resume
    next: agent
""" + TAIL)
    (problem,) = found(path)
    assert "can resume recording" in problem.message and "start -> resume" in problem.message


def test_error_routes_and_outcome_defaults_count_as_paths(write_flow: Callable[..., Path]) -> None:
    # the flow's on_error handler starts recording: any node that fails before consent gets there
    on_error = write_flow("""\
nodes:
  - id: start
    type: play
    prompt: {tts: "hello"}
    next: ask
  - id: ask
    type: consent
    prompt: {tts: "Press 1 to allow recording."}
    next: {granted: agent, denied: agent}
  - id: rec
    type: recording
    action: start
    next: agent
""" + TAIL, head="on_error: rec\n", name="on_err")
    (problem,) = found(on_error)
    assert "start -> rec" in problem.message
    # an outcome left to outcome_defaults is a path too
    defaults = write_flow("""\
nodes:
  - id: start
    type: menu
    prompt: {tts: "press 1"}
    options:
      - {key: "1", next: agent}
  - id: rec
    type: recording
    action: start
    next: agent
""" + TAIL, head="outcome_defaults: {exhausted: rec}\n", name="defaults")
    assert "start -> rec" in found(defaults)[0].message


def test_stop_and_pause_need_no_consent(write_flow: Callable[..., Path]) -> None:
    path = write_flow("""\
nodes:
  - id: start
    type: recording
    action: pause
    next: stop
  - id: stop
    type: recording
    action: stop
    next: agent
""" + TAIL)
    assert validate_paths([path]) == []


def test_a_later_refusal_takes_consent_back(write_flow: Callable[..., Path]) -> None:
    path = write_flow("""\
nodes:
  - id: start
    type: consent
    prompt: {tts: "Press 1 to allow recording."}
    next: {granted: again, denied: agent}
  - id: again
    type: consent
    prompt: {tts: "Still fine to record? Press 1."}
    next: {granted: agent, denied: rec}
  - id: rec
    type: recording
    action: start
    next: agent
""" + TAIL)
    (problem,) = found(path)
    assert "start -> again -> rec" in problem.message


def test_loops_through_consent_are_fine(write_flow: Callable[..., Path]) -> None:
    path = write_flow("""\
nodes:
  - id: start
    type: consent
    prompt: {tts: "Press 1 to allow recording."}
    next: {granted: rec, denied: menu}
  - id: rec
    type: recording
    action: start
    next: menu
  - id: menu
    type: menu
    prompt: {tts: "1 to hear the recording notice again, 2 for an agent"}
    options:
      - {key: "1", next: start}
      - {key: "2", next: agent}
    next: {exhausted: agent}
""" + TAIL)
    assert validate_paths([path]) == []


def test_subflows_are_opaque(write_flow: Callable[..., Path]) -> None:
    # a child that asks for consent does not grant it to its caller ...
    write_flow("""\
nodes:
  - id: ask
    type: consent
    prompt: {tts: "Press 1 to allow recording."}
    next: {granted: yes, denied: no}
  - id: "yes"
    type: return
    outcome: granted
  - id: "no"
    type: return
    outcome: denied
""", name="ask_consent", entry="ask")
    parent = write_flow("""\
nodes:
  - id: start
    type: subflow
    flow: ask_consent
    next: {granted: rec, denied: agent}
  - id: rec
    type: recording
    action: start
    next: agent
""" + TAIL)
    (problem,) = found(parent)
    assert "start -> rec" in problem.message
    # ... and a child that starts recording is checked from its own entry, whoever calls it
    child = write_flow("""\
nodes:
  - id: rec
    type: recording
    action: start
    next: done
  - id: done
    type: return
""", name="rec_child", entry="rec")
    caller = write_flow("""\
nodes:
  - id: start
    type: consent
    prompt: {tts: "Press 1 to allow recording."}
    next: {granted: sub, denied: agent}
  - id: sub
    type: subflow
    flow: rec_child
    next: agent
""" + TAIL, name="caller")
    assert [p.path for p in found(child)] == [child]
    assert found(caller) == []


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "helpline", "flow", "validate", *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_cli_reports_the_proof_and_passes_the_samples() -> None:
    bad = run_cli(str(BROKEN))
    assert bad.returncode == 1
    assert (f"{BROKEN}:22:5: error: recording node 'record' can start recording without a consent "
            "node's 'granted' on the way: menu -> record [recording-without-consent]") in bad.stdout
    good = run_cli("flows/")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "0 error(s), 0 warning(s)" in good.stderr
