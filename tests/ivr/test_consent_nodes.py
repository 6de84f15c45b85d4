"""``consent`` and ``recording`` nodes and sensitive nodes, run on the simulator's recorder."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from datetime import UTC
from pathlib import Path

from helpline.ivr.interpreter import run_flow
from helpline.ivr.simulate import SimulatedChannel, SimulatedRecording
from helpline.ivr.snapshot import load_flow
from helpline.ivr.testing import arun_flow_test
from helpline.voice.prompt_spec import PromptSpec

SAMPLE = Path(__file__).parents[2] / "flows" / "recorded_support.yaml"

CONSENT = """\
prompts:
  ask: {tts: "Press 1 to allow recording, 2 to refuse."}
nodes:
  - id: start
    type: consent
    prompt: ask
    timeout: 4
    retries: 1
    CONTINUE
    next: {granted: rec, denied: refused, no_response: silent}
  - id: rec
    type: recording
    action: start
    next: agent
  - id: agent
    type: enqueue
    queue: support
    next: {timeout: bye}
  - id: refused
    type: milestone
    name: refused
    next: agent
  - id: silent
    type: milestone
    name: silent
    next: agent
  - id: bye
    type: hangup
"""


def consent_flow(write_flow: Callable[..., Path], *, continue_means_yes: bool = False,
                 sensitive: bool = False) -> Path:
    extra = f"continue_means_yes: {str(continue_means_yes).lower()}"
    if sensitive:
        extra += "\n    sensitive: true"
    return write_flow(CONSENT.replace("CONTINUE", extra))  # type: ignore[no-any-return]


async def test_granted_by_key_opens_the_gate_with_evidence(write_flow: Callable[..., Path]) -> None:
    t = await arun_flow_test(consent_flow(write_flow), ["1"], at="2026-03-02T10:00 Europe/Berlin")
    t.assert_visited("rec", "agent")
    (answer,) = t.recording.consents
    assert (answer.outcome, answer.method, answer.mode) == ("granted", "dtmf", "consent")
    assert answer.response == "1"
    assert (answer.prompt_id, answer.language, answer.flow_id, answer.node_id) == ("ask", "en", "t", "start")
    assert [p.tts for p in answer.prompts] == ["Press 1 to allow recording, 2 to refuse."]
    assert answer.prompt_started_at is not None and answer.prompt_ended_at is not None
    assert answer.responded_at is not None
    assert answer.prompt_started_at.tzinfo == UTC and answer.prompt_started_at.hour == 9
    assert answer.prompt_started_at <= answer.prompt_ended_at <= answer.responded_at
    assert t.recording.calls == ["consent:granted", "start:on"]
    assert t.recording.state == "recording"
    t.assert_var("recording_active", True)
    assert "consent granted (dtmf, mode consent)" in t.lines


async def test_denied_keeps_recording_off(write_flow: Callable[..., Path]) -> None:
    t = await arun_flow_test(consent_flow(write_flow), ["2"])
    t.assert_milestones("refused")
    assert [(a.outcome, a.method, a.response) for a in t.recording.consents] == [("denied", "dtmf", "2")]
    assert "start:on" not in t.recording.calls and t.recording.state == "off"


async def test_no_response_after_retries(write_flow: Callable[..., Path]) -> None:
    t = await arun_flow_test(consent_flow(write_flow), ["", ""])
    t.assert_milestones("silent")
    (answer,) = t.recording.consents
    assert (answer.outcome, answer.method, answer.response, answer.responded_at) == (
        "no_response", "dtmf", None, None)
    assert [e.data["count"] for e in t.events if e.type == "ivr.noinput"] == [1, 2]
    assert len(t.prompts) == 2  # asked twice (retries: 1)


async def test_wrong_key_is_asked_again(write_flow: Callable[..., Path]) -> None:
    t = await arun_flow_test(consent_flow(write_flow), ["5", "1"])
    assert t.recording.consents[-1].outcome == "granted"
    assert any(e.type == "ivr.nomatch" for e in t.events)
    wrong = await arun_flow_test(consent_flow(write_flow), ["5", "9"])
    wrong.assert_milestones("silent")  # no valid answer is no consent


async def test_continue_means_yes_only_under_notify(write_flow: Callable[..., Path]) -> None:
    path = consent_flow(write_flow, continue_means_yes=True)
    notify = await arun_flow_test(path, [""], recording="notify")
    notify.assert_visited("rec")
    (answer,) = notify.recording.consents
    assert (answer.outcome, answer.method, answer.mode) == ("granted", "continue", "notify")
    assert len(notify.prompts) == 1  # silence after the notice is the answer: no re-prompt
    assert notify.recording.state == "recording"
    # under notify the offered decline key still works
    declined = await arun_flow_test(path, ["2"], recording="notify")
    declined.assert_milestones("refused")
    # under consent, staying on the line is not a yes
    strict = await arun_flow_test(path, ["", ""], recording="consent")
    strict.assert_milestones("silent")
    assert strict.recording.consents[-1].outcome == "no_response"
    assert "start:on" not in strict.recording.calls


async def test_notify_without_continue_plays_the_notice_and_grants(write_flow: Callable[..., Path]) -> None:
    t = await arun_flow_test(consent_flow(write_flow), [], recording="notify")
    t.assert_heard("Press 1 to allow recording")
    (answer,) = t.recording.consents
    assert (answer.outcome, answer.method, answer.response) == ("granted", "notice", None)
    assert answer.prompt_ended_at is not None and answer.responded_at is None
    assert not any(e.type in ("ivr.noinput", "ivr.input") for e in t.events)  # nobody waited for a key
    assert t.recording.state == "recording"


async def test_mode_none_asks_nothing_and_records_nothing(write_flow: Callable[..., Path]) -> None:
    t = await arun_flow_test(consent_flow(write_flow), ["1"], recording="none")
    assert t.prompts == []
    (answer,) = t.recording.consents
    assert (answer.outcome, answer.method, answer.prompts, answer.prompt_id) == ("granted", "none", (), None)
    t.assert_visited("rec")
    t.assert_var("recording_active", False)
    assert t.recording.calls == ["consent:granted", "start:refused"]
    assert "recording start -> off" in t.lines
    assert t.channel.unused_inputs == ["1"]


async def test_sensitive_consent_node_never_shows_the_key(write_flow: Callable[..., Path]) -> None:
    t = await arun_flow_test(consent_flow(write_flow, sensitive=True), ["7", "1"])
    assert t.recording.consents[-1].outcome == "granted"
    shown = [e.data for e in t.events if e.type in ("ivr.input", "ivr.nomatch", "recording.consent")]
    assert shown and '"7"' not in json.dumps(shown) and '"1"' not in json.dumps(shown)
    assert [d["value"] for d in shown if "value" in d] == ["***", "***", "***"]
    assert t.recording.calls[:2] == ["sensitive:on", "consent:granted"]


PAYMENT = """\
prompts:
  card: {tts: "Card number please."}
nodes:
  - id: start
    type: consent
    prompt: {tts: "Press 1 to allow recording."}
    next: {granted: rec, denied: bye}
  - id: rec
    type: recording
    action: start
    next: card
  - id: card
    type: collect
    prompt: card
    variable: card_number
    min_length: 13
    max_length: 19
    sensitive: true
    on_error: recorder_down
    next: {ok: thanks, exhausted: bye}
  - id: thanks
    type: milestone
    name: paid
    next: bye
  - id: recorder_down
    type: milestone
    name: recorder_down
    next: bye
  - id: bye
    type: hangup
"""


async def test_sensitive_node_pauses_recording_and_masks_digits(write_flow: Callable[..., Path]) -> None:
    t = await arun_flow_test(write_flow(PAYMENT), ["1", "4111111111111111#"])
    t.assert_milestones("paid")
    assert t.recording.calls == ["consent:granted", "start:on", "sensitive:on", "sensitive:off"]
    types = [e.type for e in t.events if e.type.startswith("recording.")]
    assert types == ["recording.consent", "recording.started", "recording.paused", "recording.resumed"]
    assert "4111111111111111" not in json.dumps([e.data for e in t.events])
    assert t.channel.masking is False and t.recording.sensitive_depth == 0


async def test_sensitive_pause_fails_closed_and_takes_on_error(write_flow: Callable[..., Path]) -> None:
    t = await arun_flow_test(write_flow(PAYMENT), ["1", "4111111111111111#"],
                             recording=SimulatedRecording(fail_sensitive=True))
    t.assert_milestones("recorder_down")
    t.assert_not_heard("Card number")  # the node never ran
    assert "card_number" not in t.variables
    (error,) = [e for e in t.events if e.type == "ivr.error"]
    assert error.node_id == "card" and error.data["handler"] == "recorder_down"
    assert "recording could not be paused" in error.data["error"]
    assert "sensitive:off" not in t.recording.calls  # nothing to pair: the pause never happened
    assert t.channel.masking is False
    assert t.channel.unused_inputs == ["4111111111111111#"]


async def test_sensitive_pause_failure_without_handler_ends_in_error(write_flow: Callable[..., Path]) -> None:
    path = write_flow(PAYMENT.replace("    on_error: recorder_down\n", ""))
    t = await arun_flow_test(path, ["1"], recording=SimulatedRecording(fail_sensitive=True))
    t.assert_outcome("error")
    t.assert_not_heard("Card number")


async def test_sensitive_node_that_fails_still_resumes(write_flow: Callable[..., Path]) -> None:
    t = await arun_flow_test(write_flow("""\
nodes:
  - id: start
    type: transfer
    target: "{{ nowhere }}"
    sensitive: true
    on_error: bye
    next: {failed: bye}
  - id: bye
    type: hangup
""", head="variables: {nowhere: 'not a number'}\n"))
    assert any(e.type == "ivr.error" for e in t.events)
    assert t.recording.calls == ["sensitive:on", "sensitive:off"]
    assert t.channel.masking is False


class MaskWatchingChannel(SimulatedChannel):
    """Notes whether digits were masked whenever a prompt plays."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.masked_at: list[tuple[str, bool]] = []

    async def play(self, prompts: Sequence[PromptSpec], *, barge_in: bool) -> str | None:
        self.masked_at.extend((p.describe(), self.masking) for p in prompts)
        return await super().play(prompts, barge_in=barge_in)


async def test_sensitive_subflow_nests_with_its_sensitive_nodes(write_flow: Callable[..., Path]) -> None:
    write_flow("""\
nodes:
  - id: pin
    type: collect
    prompt: {tts: "PIN"}
    variable: pin
    min_length: 4
    max_length: 4
    sensitive: true
    next: {ok: after, exhausted: done}
  - id: after
    type: play
    prompt: {tts: "still inside"}
    next: done
  - id: done
    type: return
""", name="child", entry="pin")
    parent = write_flow("""\
nodes:
  - id: start
    type: consent
    prompt: {tts: "consent?"}
    next: {granted: rec, denied: bye}
  - id: rec
    type: recording
    action: start
    next: secure
  - id: secure
    type: subflow
    flow: child
    sensitive: true
    next: outside
  - id: outside
    type: play
    prompt: {tts: "outside"}
    next: bye
  - id: bye
    type: hangup
""")
    channel = MaskWatchingChannel(inputs=["1", "1234#"])
    result = await run_flow(load_flow(parent), channel, {})
    assert result.outcome == "hangup"
    rec = channel.recording
    assert rec.calls == ["consent:granted", "start:on", "sensitive:on", "sensitive:on", "sensitive:off",
                         "sensitive:off"]
    assert (rec.max_sensitive_depth, rec.sensitive_depth, rec.state) == (2, 0, "recording")
    # one pause for the whole subflow, not one per node
    types = [e.type for e in channel.events if e.type in ("recording.paused", "recording.resumed")]
    assert types == ["recording.paused", "recording.resumed"]
    assert channel.masked_at == [("tts:consent?", False), ("tts:PIN", True), ("tts:still inside", True),
                                 ("tts:outside", False)]
    assert "1234" not in json.dumps([e.data for e in channel.events])


class SilentForever(SimulatedChannel):
    """Answers the scripted bursts, then keeps the caller on the line without a key."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.waiting = asyncio.Event()

    async def next_digit(self, timeout: float) -> str | None:
        if self.unused_inputs:
            return await super().next_digit(timeout)
        self.waiting.set()
        await asyncio.Event().wait()
        return None


async def test_hangup_inside_a_sensitive_node_still_resumes(write_flow: Callable[..., Path]) -> None:
    path = write_flow(PAYMENT)
    channel = SilentForever(inputs=["1"])
    task = asyncio.create_task(run_flow(load_flow(path), channel, {}))
    async with asyncio.timeout(5):
        await channel.waiting.wait()
    assert channel.recording.sensitive_depth == 1 and channel.masking is True
    task.cancel()
    async with asyncio.timeout(5):
        await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    assert channel.recording.calls[-2:] == ["sensitive:on", "sensitive:off"]
    assert channel.masking is False


async def test_recording_pause_resume_stop_actions(write_flow: Callable[..., Path]) -> None:
    t = await arun_flow_test(write_flow("""\
nodes:
  - id: start
    type: consent
    prompt: {tts: "ok?"}
    next: {granted: rec, denied: bye}
  - id: rec
    type: recording
    action: start
    next: hold
  - id: hold
    type: recording
    action: pause
    reason: hold
    next: back
  - id: back
    type: recording
    action: resume
    reason: hold
    next: stop
  - id: stop
    type: recording
    action: stop
    next: bye
  - id: bye
    type: hangup
"""), ["1"])
    assert t.recording.calls == ["consent:granted", "start:on", "pause:hold", "resume:hold", "stop"]
    assert [line for line in t.lines if line.startswith("recording ")] == [
        "recording started", "recording start -> on", "recording paused (hold)", "recording pause",
        "recording resumed (hold)", "recording resume", "recording stopped", "recording stop",
    ]
    t.assert_var("recording_active", False)


async def test_sample_flow_records_support_and_keeps_the_card_out() -> None:
    t = await arun_flow_test(SAMPLE, ["1", "2", "4111111111111111#"], recording="consent")
    t.assert_visited("consent", "record", "card", "card_ok", "support")
    assert t.recording.calls == ["consent:granted", "start:on", "sensitive:on", "sensitive:off"]
    assert "4111111111111111" not in json.dumps([e.data for e in t.events])
    declined = await arun_flow_test(SAMPLE, ["2", "1"], recording="consent")
    declined.assert_visited("menu", "support")
    assert "start:on" not in declined.recording.calls and declined.result.path.count("record") == 0
    carried_on = await arun_flow_test(SAMPLE, ["", "1"], recording="notify")
    assert carried_on.recording.consents[0].method == "continue"
    assert carried_on.recording.state == "recording"
