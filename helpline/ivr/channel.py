"""What the interpreter needs from a call: the :class:`Channel` contract.

The IVR knows nothing about SIP or RTP. The live call (``helpline.calls``) and the simulator both
implement :class:`Channel`; HTTP goes through an :class:`HttpPort` the channel carries, so flow tests
can answer requests without a network.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from helpline.voice.prompt_spec import PromptSpec

TRANSFER_OUTCOMES = ("connected", "busy", "no_answer", "failed")
ENQUEUE_OUTCOMES = ("answered", "timeout", "full", "closed", "left")

#: How much a party's rules ask before a call may be recorded, weakest first.
RecordingMode = Literal["none", "notify", "consent"]
#: What happens to the recording when the caller declines: nothing is kept, or only the agent's side.
DeclineAction = Literal["none", "agent_only"]
ConsentOutcome = Literal["granted", "denied", "no_response"]
#: How the answer was given: a key, staying on the line after a notice that offered a key, a notice
#: alone (``notify``), or no question at all (mode ``none``, nothing is recorded).
ConsentMethod = Literal["dtmf", "continue", "notice", "none"]


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """An HTTP answer as the flow sees it."""

    status: int
    text: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.text) if self.text else None


class HttpPort(Protocol):
    """Makes one HTTP request. Raises ``TimeoutError`` on timeout and ``OSError`` on transport failure."""

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: str | None,
        timeout: float,
    ) -> HttpResponse: ...


@dataclass(frozen=True, slots=True)
class EnqueueSpec:
    """How the caller waits in a queue; the queue name is passed alongside."""

    priority: int = 0
    skills: tuple[str, ...] = ()
    timeout: float = 300.0
    hold_prompts: tuple[PromptSpec, ...] = ()
    variables: Mapping[str, Any] = field(default_factory=dict)
    # A skill expression (``spanish >= 3 and billing >= 2``) the agent must meet, on top of the
    # queue's own requirements; ``skills`` adds "has the skill" clauses for each name.
    requirements: str | None = None
    # Shown to the agent (SIP headers, screen pop) and kept with the call's routing record.
    data: Mapping[str, str] = field(default_factory=dict)

    def requirement_text(self) -> str | None:
        """The node's requirements and ``skills`` combined into one expression (None: no constraint)."""
        clauses = [f"({self.requirements})"] if self.requirements else []
        clauses += list(self.skills)
        return " and ".join(clauses) if clauses else None


@dataclass(frozen=True, slots=True)
class ConsentPolicy:
    """The recording policy resolved for this call, as a ``consent`` node needs it.

    ``allow_continue``: staying on the line may count as a yes (only ever under ``notify``).
    """

    mode: RecordingMode
    allow_continue: bool = False
    decline_action: DeclineAction = "none"
    policy_id: str = ""
    policy_version: str = ""


@dataclass(frozen=True, slots=True)
class ConsentAnswer:
    """One consent decision as the flow saw it: the evidence the recording side stores.

    ``response`` is the key pressed (``None`` for no key). ``prompts`` are the resolved prompt specs, so
    the live side can hash the audio the caller heard. Times are UTC; ``None`` when there was no
    prompt (mode ``none``) or no response.
    """

    outcome: ConsentOutcome
    method: ConsentMethod
    mode: RecordingMode
    response: str | None
    prompt_id: str | None
    language: str
    prompts: tuple[PromptSpec, ...]
    prompt_started_at: datetime | None
    prompt_ended_at: datetime | None
    responded_at: datetime | None
    flow_id: str
    node_id: str


class RecordingUnavailable(Exception):
    """The recorder cannot confirm a state change (pause for a sensitive node): fail closed."""


class RecordingControl(Protocol):
    """The call's recorder as a flow drives it (``Channel.recording``).

    The recorder owns the gate: ``start`` records only when the policy and the stored consent allow.
    ``sensitive`` calls nest (a sensitive subflow holding sensitive nodes): the flow pairs every
    ``sensitive(True)`` with one ``sensitive(False)``, and recording stays paused until the last one.
    """

    def policy(self) -> ConsentPolicy:
        """The resolved policy for this call (mode, allow_continue, decline_action)."""
        ...

    async def consent(self, answer: ConsentAnswer) -> None:
        """Store the decision as evidence and open or close the gate accordingly."""
        ...

    async def start(self) -> bool:
        """Start (or keep) recording; ``False`` when the policy or the consent keep it off."""
        ...

    async def stop(self) -> None: ...

    async def pause(self, reason: str) -> None: ...

    async def resume(self, reason: str) -> None: ...

    async def sensitive(self, on: bool) -> None:
        """Enter (``True``) or leave a sensitive stretch; raises :class:`RecordingUnavailable` when the
        pause cannot be confirmed, and the flow then does not enter the node."""
        ...


class NoRecording:
    """The recorder of a call that is never recorded: policy ``none``, nothing to pause."""

    def policy(self) -> ConsentPolicy:
        return ConsentPolicy(mode="none")

    async def consent(self, answer: ConsentAnswer) -> None:
        return None

    async def start(self) -> bool:
        return False

    async def stop(self) -> None:
        return None

    async def pause(self, reason: str) -> None:
        return None

    async def resume(self, reason: str) -> None:
        return None

    async def sensitive(self, on: bool) -> None:
        return None


class Channel(Protocol):
    """One caller, as seen by a running flow. Caller hang-up arrives as task cancellation."""

    call_id: str
    caller: str
    did: str
    http: HttpPort

    @property
    def recording(self) -> RecordingControl:
        """The call's recorder (:class:`NoRecording` when the call is never recorded)."""
        ...

    async def play(self, prompts: Sequence[PromptSpec], *, barge_in: bool) -> str | None:
        """Play prompts in order; with ``barge_in`` a digit stops playback and is returned (and consumed)."""
        ...

    async def next_digit(self, timeout: float) -> str | None:
        """The next buffered or arriving DTMF digit, or ``None`` after ``timeout`` seconds."""
        ...

    def flush_digits(self) -> None:
        """Drop digits typed so far (used after prompts that may not be interrupted)."""
        ...

    def mask_input(self, on: bool) -> None:
        """While on, the channel must not reveal the caller's digits in its own events or logs.

        The interpreter masks what it emits; a channel that reports raw key presses (the live call's
        ``dtmf.received``) masks them too while a ``sensitive`` input is being collected.
        """
        ...

    async def pause(self, seconds: float) -> None: ...

    async def transfer(self, target: str, timeout: float) -> str:
        """Blind transfer; returns one of :data:`TRANSFER_OUTCOMES`."""
        ...

    async def enqueue(self, queue: str, spec: EnqueueSpec) -> str:
        """Hand the caller to a queue; returns one of :data:`ENQUEUE_OUTCOMES`."""
        ...

    async def hangup(self, sip_code: int | None = None) -> None: ...

    def now(self) -> datetime:
        """The current time, timezone-aware."""
        ...

    def emit(self, type: str, node_id: str | None, data: dict[str, Any]) -> None:
        """Publish a domain event for this call (values already masked by the interpreter)."""
        ...
