"""``consent`` (ask or tell the caller about recording) and ``recording`` (drive the recorder).

The recorder behind ``channel.recording`` owns the gate: these nodes hand it the caller's answer and
ask it to start, stop, pause or resume; it decides, from the resolved policy and the stored consent,
whether audio is kept. ``flow validate`` proves that no path reaches a start without a ``granted``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Literal

from pydantic import Field, model_validator

from helpline.ivr.channel import ConsentAnswer, ConsentMethod, ConsentOutcome, ConsentPolicy
from helpline.ivr.context import RunContext
from helpline.ivr.input_policy import (
    Answer,
    DtmfSource,
    GatherSpec,
    Heard,
    InputPolicy,
    ask,
)
from helpline.ivr.model import REQUIRED, DtmfKey, InputSettings, NodeBase, OutcomeRule
from helpline.ivr.prompts import Prompts
from helpline.voice.prompt_spec import PromptSpec

#: What a start or resume needs on every path before it: this outcome of a ``consent`` node.
GRANTED = "granted"
#: Actions that make the recorder write audio, and so need consent first.
RECORDING_ACTIONS = frozenset({"start", "resume"})


def _utc(ctx: RunContext) -> datetime:
    return ctx.channel.now().astimezone(UTC)


class _TimedKeypad:
    """The keypad source, with the last attempt's prompt and timing kept as consent evidence.

    The prompt is played here (to see when it ends) and the wait for the key is the plain
    :class:`DtmfSource`; one key is all a consent answer takes, so a barge-in key is the answer.
    """

    def __init__(self) -> None:
        self.keypad = DtmfSource()
        self.prompts: tuple[PromptSpec, ...] = ()
        self.started: datetime | None = None
        self.ended: datetime | None = None
        self.heard_at: datetime | None = None

    async def listen(
        self, ctx: RunContext, prompts: Sequence[PromptSpec], policy: InputPolicy, spec: GatherSpec
    ) -> Heard:
        self.prompts = tuple(prompts)
        self.started = _utc(ctx)
        digit = await ctx.play_specs(prompts, barge_in=policy.barge_in)
        self.ended = _utc(ctx)
        heard = Heard(digit) if digit is not None else await self.keypad.listen(ctx, (), policy, spec)
        self.heard_at = _utc(ctx) if heard.value else None
        return heard


class ConsentNode(NodeBase):
    """Ask for (``consent`` mode) or announce (``notify`` mode) recording; outcomes ``granted``,
    ``denied`` and ``no_response`` (falls back to ``denied`` when unmapped).

    Under ``consent`` the caller presses ``accept_key`` or ``decline_key``; ``timeout`` and ``retries``
    are the usual input policy (noinput and nomatch each get ``retries`` more tries). Under ``notify``
    the prompt is a notice and the answer is ``granted`` (method ``notice``); with
    ``continue_means_yes`` the notice offers the keys and silence counts as yes (method ``continue``).
    ``continue_means_yes`` never applies under ``consent``. Under ``none`` nothing plays and the
    answer is ``granted`` with method ``none``: the recorder keeps recording off anyway.
    """

    type: Literal["consent"]
    prompt: Prompts = Field(min_length=1)
    accept_key: DtmfKey = "1"
    decline_key: DtmfKey = "2"
    timeout: float = Field(default=5.0, gt=0, le=60)
    retries: int = Field(default=2, ge=0, le=10)
    continue_means_yes: bool = False
    waits_for_caller = True
    outcomes = MappingProxyType({
        "granted": REQUIRED,
        "denied": REQUIRED,
        "no_response": OutcomeRule("fallback", fallback="denied"),
    })

    @model_validator(mode="after")
    def _keys(self) -> ConsentNode:
        if self.accept_key == self.decline_key:
            raise ValueError("accept_key and decline_key must differ")
        return self

    def _prompt_id(self, ctx: RunContext) -> str:
        """Catalog ids name the prompt version; an inline prompt is named by where it is written."""
        ids = [ref for ref in self.prompt if isinstance(ref, str)]
        return "+".join(ids) if len(ids) == len(self.prompt) else f"{ctx.flow.id}/{self.id}"

    def _input_policy(self, ctx: RunContext, continuing: bool) -> InputPolicy:
        tries = self.retries + 1
        own = InputSettings(first_digit_timeout=self.timeout, max_noinput=tries, max_nomatch=tries,
                            zero_out=False)
        policy = InputPolicy.resolve(own, ctx.flow.document.input_defaults)
        # after a notice that offers the keys, the first silence is the caller carrying on
        return dataclasses.replace(policy, max_noinput=1) if continuing else policy

    async def run(self, ctx: RunContext) -> str:
        policy = ctx.channel.recording.policy()
        answer = await self._answer(ctx, policy)
        await ctx.channel.recording.consent(answer)
        return answer.outcome

    async def _answer(self, ctx: RunContext, policy: ConsentPolicy) -> ConsentAnswer:
        def evidence(outcome: ConsentOutcome, method: ConsentMethod, response: str | None = None,
                     prompts: tuple[PromptSpec, ...] = (), started: datetime | None = None,
                     ended: datetime | None = None, responded: datetime | None = None) -> ConsentAnswer:
            return ConsentAnswer(
                outcome=outcome, method=method, mode=policy.mode, response=response,
                prompt_id=self._prompt_id(ctx) if prompts else None,
                language=ctx.flow.document.flow.language, prompts=prompts, prompt_started_at=started,
                prompt_ended_at=ended, responded_at=responded, flow_id=ctx.flow.id, node_id=self.id,
            )

        if policy.mode == "none":
            return evidence("granted", "none")
        continuing = policy.mode == "notify" and policy.allow_continue and self.continue_means_yes
        if policy.mode == "notify" and not continuing:
            specs = tuple(ctx.prompt_specs(self.prompt))
            started = _utc(ctx)
            await ctx.play_specs(specs, barge_in=False)
            return evidence("granted", "notice", None, specs, started, _utc(ctx))

        keys = {self.accept_key: "granted", self.decline_key: "denied"}

        def match(value: str) -> Answer | None:
            outcome = keys.get(value)
            return Answer(outcome, value) if outcome else None

        listener = _TimedKeypad()
        result = await ask(ctx, self._input_policy(ctx, continuing), self.prompt, GatherSpec(1), match,
                           sensitive=self.sensitive, source=listener, nomatch_outcome="no_response")
        times = (listener.prompts, listener.started, listener.ended)
        if result.outcome == "granted":
            return evidence("granted", "dtmf", result.value, *times, listener.heard_at)
        if result.outcome == "denied":
            return evidence("denied", "dtmf", result.value, *times, listener.heard_at)
        if continuing:
            return evidence("granted", "continue", None, *times)
        return evidence("no_response", "dtmf", None, *times)


class RecordingNode(NodeBase):
    """Ask the recorder to ``start``, ``stop``, ``pause`` or ``resume``. Outcome ``next``.

    A start is refused by the recorder (and recording stays off) without policy and consent; the
    result lands in ``ivr.recording`` and in the variable ``recording_active``.
    """

    type: Literal["recording"]
    action: Literal["start", "stop", "pause", "resume"]
    reason: str = Field(default="flow", pattern=r"^[A-Za-z0-9_.:-]+$")

    async def run(self, ctx: RunContext) -> str:
        recorder = ctx.channel.recording
        if self.action == "start":
            started = await recorder.start()
            ctx.emit("ivr.recording", {"action": self.action, "result": "on" if started else "off"})
            ctx.set_var("recording_active", started)
            return "next"
        if self.action == "stop":
            await recorder.stop()
            ctx.set_var("recording_active", False)
        elif self.action == "pause":
            await recorder.pause(self.reason)
        else:
            await recorder.resume(self.reason)
        ctx.emit("ivr.recording", {"action": self.action, "reason": self.reason})
        return "next"
