"""Masking of sensitive values in events: whole values always, inside text only when long enough,
identifiers never; templated text shows a secret hole as ``***`` while the caller hears the value."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from helpline.ivr.testing import arun_flow_test

SHORT = """\
nodes:
  - id: start
    type: collect
    prompt: {tts: "one digit"}
    variable: VAR
    max_length: 1
    sensitive: true
    next: {ok: m1, exhausted: bye}
  - id: m1
    type: milestone
    name: m1
    data: {note: "room 101", typed: "{{ VAR }}"}
    next: room
  - id: room
    type: play
    prompt: {tts: "room 101, you typed {{ VAR }}"}
    next: copy
  - id: copy
    type: set
    values: {same: "VAR", number: "int(VAR)", other: "'x1'"}
    next: bye
  - id: bye
    type: hangup
"""


async def test_a_one_digit_secret_masks_whole_values_and_holes_only(write_flow: Callable[..., Path]) -> None:
    t = await arun_flow_test(write_flow(SHORT.replace("VAR", "pin")), ["1"])
    t.assert_outcome("hangup")
    t.assert_milestones("m1")
    milestone = next(e for e in t.events if e.type == "ivr.milestone")
    assert milestone.data["data"] == {"note": "room 101", "typed": "***"}
    assert "tts:room 101, you typed ***" in t.text()
    assert t.prompts[-1] == "tts:room 101, you typed ***"
    assert t.channel.played[-1].tts == "room 101, you typed 1"  # the caller still hears it
    shown = {e.data["name"]: e.data["value"] for e in t.events if e.type == "ivr.variable_set"}
    assert shown == {"pin": "***", "same": "***", "number": "***", "other": "x1"}
    entered = [e.node_id for e in t.events if e.type == "ivr.node_entered"]
    assert entered == ["start", "m1", "room", "copy", "bye"]


async def test_identifier_fields_are_never_masked(write_flow: Callable[..., Path]) -> None:
    # a secret variable called "name" must not hide milestone or variable names
    t = await arun_flow_test(write_flow(SHORT.replace("VAR", "name")), ["1"])
    t.assert_milestones("m1")
    assert next(e.data["name"] for e in t.events if e.type == "ivr.variable_set") == "name"
    assert all(e.data["flow"] == "t" for e in t.events if e.type == "ivr.node_entered")


PIN = """\
nodes:
  - id: start
    type: collect
    prompt: {tts: "PIN please"}
    variable: pin
    min_length: 4
    max_length: 4
    sensitive: true
    next: {ok: look, exhausted: bye}
  - id: look
    type: http
    method: POST
    url: "https://api.test/v?pin={{ urlencode(pin) }}&x={{ int(pin) * 10 }}"
    body: "{{ pin }}"
    next: {ok: derived, error: derived}
  - id: derived
    type: set
    values: {f: "float(pin)", n: "int(pin) + 0", s: "'PIN-' + pin"}
    next: bye
  - id: bye
    type: hangup
    prompt: {tts: "bye {{ pin }}{{ pin }}"}
"""


async def test_a_pin_never_appears_in_any_event(write_flow: Callable[..., Path]) -> None:
    t = await arun_flow_test(write_flow(PIN), ["5678"], http={"https://api.test/": {"json": {}}})
    t.assert_outcome("hangup")
    assert t.http.calls[0].url == "https://api.test/v?pin=5678&x=56780"
    assert t.http.calls[0].body == "5678"
    dumped = json.dumps([e.data for e in t.events])
    assert "5678" not in dumped
    http = next(e for e in t.events if e.type == "ivr.http")
    assert http.data["url"] == "https://api.test/v?pin=***&x=***"
    shown = {e.data["name"]: e.data["value"] for e in t.events if e.type == "ivr.variable_set"}
    assert shown == {"pin": "***", "f": "***", "n": "***", "s": "PIN-***"}
    assert t.prompts[-1] == "tts:bye ******"
