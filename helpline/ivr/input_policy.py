"""The shared pieces of caller input, VoiceXML style, that ``menu`` and ``collect`` are built from.

- :class:`InputPolicy`: timeouts, retry limits, escalating prompts, repeat and zero-out keys and
  barge-in, resolved node → flow ``input_defaults`` → built-in defaults.
- :class:`InputSource`: how one attempt listens (prompt, then gather). :class:`DtmfSource` is the
  keypad; a speech source (later) implements the same protocol.
- :func:`ask`: the retry loop with separate noinput/nomatch counters; the node only supplies a
  matcher that turns what was heard into an outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from helpline.ivr.context import MASK, RunContext
from helpline.ivr.model import InputSettings
from helpline.ivr.prompts import PromptRef
from helpline.voice.prompt_spec import PromptSpec

BUILTIN = InputSettings(
    first_digit_timeout=5.0,
    inter_digit_timeout=3.0,
    max_noinput=3,
    max_nomatch=3,
    noinput_prompts=(),
    nomatch_prompts=(),
    repeat_key=False,
    zero_out=False,
    barge_in=True,
)


@dataclass(frozen=True, slots=True)
class InputPolicy:
    first_digit_timeout: float
    inter_digit_timeout: float
    max_noinput: int
    max_nomatch: int
    noinput_prompts: tuple[PromptRef, ...]
    nomatch_prompts: tuple[PromptRef, ...]
    repeat_key: str | None
    zero_out_key: str | None
    zero_out_outcome: str | None
    barge_in: bool

    @classmethod
    def resolve(cls, *layers: InputSettings) -> InputPolicy:
        """Merge layers, most specific first; the built-in defaults fill what no layer sets."""
        merged: dict[str, object] = {}
        for name in InputSettings.model_fields:
            merged[name] = next(
                (v for layer in (*layers, BUILTIN) if (v := getattr(layer, name)) is not None), None
            )
        zero_out = merged["zero_out"]
        repeat = merged["repeat_key"]
        return cls(
            first_digit_timeout=float(merged["first_digit_timeout"]),  # type: ignore[arg-type]
            inter_digit_timeout=float(merged["inter_digit_timeout"]),  # type: ignore[arg-type]
            max_noinput=int(merged["max_noinput"]),  # type: ignore[call-overload]
            max_nomatch=int(merged["max_nomatch"]),  # type: ignore[call-overload]
            noinput_prompts=tuple(merged["noinput_prompts"]),  # type: ignore[arg-type]
            nomatch_prompts=tuple(merged["nomatch_prompts"]),  # type: ignore[arg-type]
            repeat_key=repeat if isinstance(repeat, str) else None,
            zero_out_key=getattr(zero_out, "key", None),
            zero_out_outcome=getattr(zero_out, "outcome", None),
            barge_in=bool(merged["barge_in"]),
        )

    @staticmethod
    def escalation(prompts: Sequence[PromptRef], count: int) -> tuple[PromptRef, ...]:
        """The prompt for the ``count``-th event: the nth entry, or the last once the list runs out."""
        if not prompts:
            return ()
        return (prompts[min(count, len(prompts)) - 1],)


@dataclass(frozen=True, slots=True)
class GatherSpec:
    """How much input one attempt takes."""

    max_digits: int = 1
    terminator: str | None = None
    #: Keys that end the attempt at once when pressed first (repeat key, ``*`` zero-out ...).
    stop_keys: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Heard:
    """One attempt's result: ``None`` value means nothing was heard (noinput)."""

    value: str | None
    source: str = "dtmf"


class InputSource(Protocol):
    async def listen(
        self, ctx: RunContext, prompts: Sequence[PromptSpec], policy: InputPolicy, spec: GatherSpec
    ) -> Heard: ...


class DtmfSource:
    """Prompt with optional barge-in, then first-digit and inter-digit timeouts, terminator, max length."""

    async def listen(
        self, ctx: RunContext, prompts: Sequence[PromptSpec], policy: InputPolicy, spec: GatherSpec
    ) -> Heard:
        channel = ctx.channel
        digit = await ctx.play_specs(prompts, barge_in=policy.barge_in)
        if not policy.barge_in:
            channel.flush_digits()
        if digit is None:
            digit = await channel.next_digit(policy.first_digit_timeout)
        if digit is None:
            return Heard(None)
        if spec.terminator is not None and digit == spec.terminator:
            return Heard("")
        digits = digit
        if digit in spec.stop_keys:
            return Heard(digits)
        while len(digits) < spec.max_digits:
            digit = await channel.next_digit(policy.inter_digit_timeout)
            if digit is None or digit == spec.terminator:
                break
            digits += digit
        return Heard(digits)


@dataclass(frozen=True, slots=True)
class Answer:
    """The end of an input node: the outcome and the accepted value (``None`` on exhausted)."""

    outcome: str
    value: str | None = None


Matcher = Callable[[str], Answer | None]


async def ask(
    ctx: RunContext,
    policy: InputPolicy,
    prompt: Sequence[PromptRef],
    spec: GatherSpec,
    matcher: Matcher,
    *,
    sensitive: bool = False,
    source: InputSource | None = None,
    nomatch_outcome: str = "exhausted",
) -> Answer:
    """Prompt until ``matcher`` accepts, the caller zeroes out, or a counter runs out.

    After a noinput or nomatch the escalation prompt for that count plays, then the main prompt again.
    The repeat key replays the main prompt without counting against the caller.
    """
    if not sensitive:
        return await _ask(ctx, policy, prompt, spec, matcher, False, source, nomatch_outcome)
    ctx.channel.mask_input(True)
    try:
        return await _ask(ctx, policy, prompt, spec, matcher, True, source, nomatch_outcome)
    finally:
        ctx.channel.mask_input(False)


async def _ask(
    ctx: RunContext,
    policy: InputPolicy,
    prompt: Sequence[PromptRef],
    spec: GatherSpec,
    matcher: Matcher,
    sensitive: bool,
    source: InputSource | None,
    nomatch_outcome: str,
) -> Answer:
    listener = source or DtmfSource()
    noinput = nomatch = 0
    lead: tuple[PromptRef, ...] = ()
    while True:
        specs = ctx.prompt_specs((*lead, *prompt))
        heard = await listener.listen(ctx, specs, policy, spec)
        lead = ()
        if heard.value is None:
            noinput += 1
            ctx.emit("ivr.noinput", {"count": noinput, "max": policy.max_noinput})
            if noinput >= policy.max_noinput:
                return Answer("exhausted")
            lead = policy.escalation(policy.noinput_prompts, noinput)
            continue
        shown = MASK if sensitive and heard.value else heard.value
        answer = matcher(heard.value)
        if answer is None and heard.value == policy.repeat_key:
            ctx.emit("ivr.input", {"value": heard.value, "source": heard.source, "action": "repeat"})
            continue
        if answer is None and heard.value == policy.zero_out_key and policy.zero_out_outcome:
            ctx.emit("ivr.input", {"value": heard.value, "source": heard.source, "action": "zero_out"})
            return Answer(policy.zero_out_outcome)
        ctx.emit("ivr.input", {"value": shown, "source": heard.source, "matched": answer is not None})
        if answer is not None:
            return answer
        nomatch += 1
        ctx.emit("ivr.nomatch", {"count": nomatch, "max": policy.max_nomatch, "value": shown})
        if nomatch >= policy.max_nomatch:
            return Answer(nomatch_outcome)
        lead = policy.escalation(policy.nomatch_prompts, nomatch)
