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
from typing import Any, Protocol

from helpline.voice.prompt_spec import PromptSpec

TRANSFER_OUTCOMES = ("connected", "busy", "no_answer", "failed")
ENQUEUE_OUTCOMES = ("answered", "timeout", "full", "closed", "left")


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


class Channel(Protocol):
    """One caller, as seen by a running flow. Caller hang-up arrives as task cancellation."""

    call_id: str
    caller: str
    did: str
    http: HttpPort

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
