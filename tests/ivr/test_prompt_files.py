"""``file:`` prompts with templates: rendered per call inside the flow's directory, failures routed
to ``on_error``; the validator checks the holes and the fixed parts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from helpline.ivr.testing import arun_flow_test
from helpline.ivr.validate import validate_paths

FLOW = """\
on_error: oops
variables: {lang: en}
nodes:
  - id: start
    type: play
    prompt: {file: "audio/{{ lang }}/welcome.wav"}
    next: bye
  - id: oops
    type: milestone
    name: prompt_failed
    next: bye
  - id: bye
    type: hangup
"""


async def test_templated_file_is_rendered_per_call(write_flow: Callable[..., Path], tmp_path: Path) -> None:
    for lang in ("en", "de"):
        (tmp_path / "audio" / lang).mkdir(parents=True)
        (tmp_path / "audio" / lang / "welcome.wav").write_bytes(b"RIFF")
    path = write_flow(FLOW)
    assert validate_paths([path]) == []
    t = await arun_flow_test(path, variables={"lang": "de"})
    assert t.channel.played[0].file == (tmp_path / "audio" / "de" / "welcome.wav").resolve()
    assert t.prompts == ["file:welcome.wav"]
    t.assert_milestones()


async def test_missing_or_escaping_rendered_file_is_a_node_error(
    write_flow: Callable[..., Path], tmp_path: Path
) -> None:
    (tmp_path / "secret.wav").write_bytes(b"RIFF")
    (tmp_path / "audio" / "en").mkdir(parents=True)
    path = write_flow(FLOW)
    for lang, message in (("fr", "does not exist"), ("../../secret.wav#", "outside the flow's directory"),
                          ("../..", "outside the flow's directory")):
        t = await arun_flow_test(path, variables={"lang": lang})
        t.assert_milestones("prompt_failed")
        (error,) = [e for e in t.events if e.type == "ivr.error"]
        assert message in error.data["error"] and error.data["handler"] == "oops"
        assert t.channel.played == []


def test_validator_checks_templated_paths(write_flow: Callable[..., Path]) -> None:
    escaping = write_flow(FLOW.replace('"audio/{{ lang }}', '"../{{ lang }}'))
    (problem,) = validate_paths([escaping])
    assert (problem.code, problem.line, problem.column) == ("bad-prompt-file", 9, 20)  # the opening quote
    bad_hole = write_flow(FLOW.replace("{{ lang }}", "{{ lang.x }}"))
    (problem,) = validate_paths([bad_hole])
    assert problem.code == "bad-expression" and "attribute access" in problem.message
    assert (problem.line, problem.column) == (9, 21 + len("audio/{{ "))  # at "lang.x"
