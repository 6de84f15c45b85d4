"""Interpreter semantics on the simulator: retries, escalation, barge-in, keys, masking, subflows,
errors and cancellation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from helpline.ivr.interpreter import run_flow
from helpline.ivr.simulate import SimulatedChannel
from helpline.ivr.snapshot import load_flow
from helpline.ivr.testing import arun_flow_test

MENU = """\
input_defaults:
  max_noinput: 3
  max_nomatch: 2
  noinput_prompts: [{tts: "noinput one"}, {tts: "noinput two"}]
  nomatch_prompts: [{tts: "nomatch one"}]
  repeat_key: "*"
  zero_out: {key: "0", outcome: operator}
nodes:
  - id: start
    type: menu
    prompt: {tts: "main menu"}
    options:
      - {key: 1, outcome: one, next: got_one}
    next: {exhausted: gave_up, operator: to_operator}
  - id: got_one
    type: milestone
    name: one
    next: bye
  - id: gave_up
    type: milestone
    name: exhausted
    next: bye
  - id: to_operator
    type: milestone
    name: operator
    next: bye
  - id: bye
    type: hangup
"""


async def test_noinput_escalates_then_exhausts(write_flow: Callable[..., Path]) -> None:
    t = await arun_flow_test(write_flow(MENU), [])
    t.assert_milestones("exhausted")
    assert t.prompts == [
        "tts:main menu",
        "tts:noinput one", "tts:main menu",
        "tts:noinput two", "tts:main menu",
    ]
    assert [e.data["count"] for e in t.events if e.type == "ivr.noinput"] == [1, 2, 3]


async def test_last_escalation_prompt_repeats_and_counters_are_separate(
    write_flow: Callable[..., Path],
) -> None:
    t = await arun_flow_test(write_flow(MENU), ["9", "", "1"])
    t.assert_milestones("one")
    assert t.prompts == ["tts:main menu", "tts:nomatch one", "tts:main menu", "tts:noinput one",
                         "tts:main menu"]
    t2 = await arun_flow_test(write_flow(MENU), ["9", "8"])
    t2.assert_milestones("exhausted")
    assert [e.data["count"] for e in t2.events if e.type == "ivr.nomatch"] == [1, 2]


async def test_repeat_key_replays_without_counting(write_flow: Callable[..., Path]) -> None:
    t = await arun_flow_test(write_flow(MENU), ["*", "*", "1"])
    t.assert_milestones("one")
    assert t.prompts == ["tts:main menu"] * 3
    assert not [e for e in t.events if e.type in ("ivr.nomatch", "ivr.noinput")]


async def test_zero_out_key(write_flow: Callable[..., Path]) -> None:
    t = await arun_flow_test(write_flow(MENU), ["0"])
    t.assert_milestones("operator")


async def test_barge_in_digit_is_the_answer(write_flow: Callable[..., Path]) -> None:
    body = """\
nodes:
  - id: start
    type: menu
    prompt: {tts: first}
    options: [{key: 1, next: second}]
    next: {exhausted: bye}
  - id: second
    type: menu
    barge_in: BARGE
    prompt: {tts: second}
    options: [{key: 2, outcome: two, next: done}]
    next: {exhausted: bye}
  - id: done
    type: milestone
    name: two
    next: bye
  - id: bye
    type: hangup
"""
    # "12": 1 answers the first menu, 2 is already typed when the second prompt starts
    t = await arun_flow_test(write_flow(body.replace("BARGE", "true")), ["12"])
    t.assert_milestones("two")
    played = [e.data for e in t.events if e.type == "ivr.prompt_played"]
    assert played[1]["interrupted_by"] == "dtmf"
    # without barge-in the early digit is flushed after the prompt: the caller has to answer again
    t2 = await arun_flow_test(write_flow(body.replace("BARGE", "false")), ["12"])
    t2.assert_milestones()
    assert any(e.type == "ivr.noinput" for e in t2.events)


SECRET = """\
nodes:
  - id: start
    type: collect
    prompt: {tts: "PIN please"}
    variable: pin
    min_length: 4
    max_length: 4
    sensitive: true
    max_nomatch: 2
    next: {ok: look, exhausted: bye}
  - id: look
    type: http
    url: "https://api.test/pin/{{ pin }}"
    save: {name: name}
    next: {ok: echo, error: bye}
  - id: echo
    type: set
    values: {copy: "pin + '!'"}
    next: bye
  - id: bye
    type: hangup
    prompt: {tts: "bye {{ pin }}"}
"""


async def test_sensitive_value_never_reaches_events(write_flow: Callable[..., Path]) -> None:
    t = await arun_flow_test(
        write_flow(SECRET), ["12", "5678#"], http={"https://api.test/pin/": {"json": {"name": "Bo"}}}
    )
    t.assert_outcome("hangup")
    assert t.variables["pin"] == "5678"
    assert t.http.calls[0].url == "https://api.test/pin/5678"
    dumped = json.dumps([e.data for e in t.events])
    assert "5678" not in dumped and "12" not in dumped.replace('"count"', "")
    inputs = [e.data["value"] for e in t.events if e.type == "ivr.input"]
    assert inputs == ["***", "***"]
    assert "pin" in t.result.sensitive
    assert "bye ***" in t.text()


async def test_collect_terminator_and_invalid_fallback(write_flow: Callable[..., Path]) -> None:
    t = await arun_flow_test(write_flow(SECRET), ["1#", "12#"])
    assert t.result.path[-1] == "bye"
    assert [e.data["count"] for e in t.events if e.type == "ivr.nomatch"] == [1, 2]


async def test_subflow_inputs_outputs_and_outcome(write_flow: Callable[..., Path]) -> None:
    write_flow("""\
nodes:
  - id: start
    type: return
    outcome: doubled
    outputs: {result: "x * 2"}
""", name="double")
    main = write_flow("""\
nodes:
  - id: start
    type: subflow
    flow: double
    inputs: {x: "21"}
    next: {doubled: check}
  - id: check
    type: branch
    conditions: [{when: "result == 42", next: good}]
    default: bye
  - id: good
    type: milestone
    name: good
    next: bye
  - id: bye
    type: hangup
""", name="main")
    t = await arun_flow_test(main)
    t.assert_milestones("good")
    assert "double/start" in t.result.path
    assert [e.data["outcome"] for e in t.events if e.type == "ivr.outcome"] == ["doubled", "hangup"]


ERRORS = """\
HEAD
nodes:
  - id: start
    type: set
    values: {x: "missing_var + 1"}
    ON_ERROR
    next: bye
  - id: recover
    type: milestone
    name: recovered
    next: bye
  - id: flow_recover
    type: milestone
    name: flow_recovered
    next: bye
  - id: bye
    type: hangup
"""


async def test_on_error_node_then_flow_then_error_outcome(write_flow: Callable[..., Path]) -> None:
    node_level = ERRORS.replace("HEAD", "on_error: flow_recover").replace("ON_ERROR", "on_error: recover")
    t = await arun_flow_test(write_flow(node_level))
    t.assert_milestones("recovered")
    assert "missing_var" in t.variables["error"]
    flow_level = ERRORS.replace("HEAD", "on_error: flow_recover").replace("ON_ERROR", "")
    t = await arun_flow_test(write_flow(flow_level))
    t.assert_milestones("flow_recovered")
    unhandled = ERRORS.replace("HEAD", "").replace("ON_ERROR", "")
    t = await arun_flow_test(write_flow(unhandled))
    t.assert_outcome("error")
    assert [e.type for e in t.events][-2:] == ["ivr.error", "ivr.outcome"]


async def test_goto_max_visits_exceeded(write_flow: Callable[..., Path]) -> None:
    t = await arun_flow_test(write_flow("""\
nodes:
  - id: start
    type: play
    prompt: {tone: {hz: 440, ms: 100}}
    next: again
  - id: again
    type: goto
    target: start
    max_visits: 2
    next: {exceeded: bye}
  - id: bye
    type: hangup
"""))
    assert t.prompts.count("tone:440Hz/100ms") == 3
    t.assert_outcome("hangup")


async def test_check_hours_uses_the_channel_clock(write_flow: Callable[..., Path]) -> None:
    path = write_flow("""\
schedules:
  office:
    weekly: {thu: ["09:00-18:00"]}
    holidays: [2026-12-25]
nodes:
  - id: start
    type: check_hours
    schedule: office
    next: {open: bye, closed: bye}
  - id: bye
    type: hangup
""", head="  timezone: Europe/Berlin\n")
    results = {}
    for at in ("2026-12-24T17:59 Europe/Berlin", "2026-12-24T18:00 Europe/Berlin",
               "2026-12-24T17:00 UTC", "2026-12-25T10:00 Europe/Berlin"):
        t = await arun_flow_test(path, at=at)
        results[at] = t.variables["hours"]
    assert list(results.values()) == ["open", "closed", "closed", "holiday"]


async def test_caller_hangup_cancels_without_more_events(write_flow: Callable[..., Path]) -> None:
    flow = load_flow(write_flow(MENU))
    waiting = asyncio.Event()

    class Blocking(SimulatedChannel):
        async def next_digit(self, timeout: float) -> str | None:
            waiting.set()
            await asyncio.Event().wait()
            return None

    channel = Blocking()
    task = asyncio.create_task(run_flow(flow, channel, {}))
    await asyncio.wait_for(waiting.wait(), 5)
    seen = len(channel.events)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert len(channel.events) == seen
    assert channel.events[-1].type == "ivr.prompt_played"


async def test_transfer_and_enqueue_outcomes(write_flow: Callable[..., Path]) -> None:
    path = write_flow("""\
nodes:
  - id: start
    type: enqueue
    queue: support
    timeout: 3
    hold_prompt: {tone: {hz: 440, ms: 200}}
    next: {timeout: op}
  - id: op
    type: transfer
    target: "+4930123456"
    next: {failed: bye}
  - id: bye
    type: hangup
    sip_code: 480
""")
    t = await arun_flow_test(path, enqueue="answered")
    t.assert_outcome("answered")
    t = await arun_flow_test(path)
    t.assert_outcome("transferred")
    assert t.channel.transfers == ["+4930123456"]
    assert t.channel.enqueued[0][1].hold_prompts[0].tone_hz == (440.0,)
    t = await arun_flow_test(path, transfer="busy")
    t.assert_outcome("hangup")
    assert t.channel.hung_up == 480


async def test_http_timeout_and_error(write_flow: Callable[..., Path]) -> None:
    path = write_flow("""\
nodes:
  - id: start
    type: http
    method: POST
    url: "https://api.test/x"
    body: {who: "{{ caller }}"}
    status_var: status
    next: {ok: ok, error: err}
  - id: ok
    type: milestone
    name: ok
    next: bye
  - id: err
    type: milestone
    name: err
    next: bye
  - id: bye
    type: hangup
""")
    for answer, milestone in (({"status": 204}, "ok"), ({"status": 500}, "err"), ("timeout", "err"),
                              ("error", "err")):
        t = await arun_flow_test(path, http={"POST https://api.test/x": answer})
        t.assert_milestones(milestone)
    assert json.loads(t.http.calls[0].body or "") == {"who": "+15550100001"}
