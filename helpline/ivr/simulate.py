"""A :class:`Channel` without a network, for ``flow simulate`` and flow unit tests.

Scripted input: each entry of ``inputs`` is a burst of digits the caller types at the next input
request (the first digit wait after a prompt). An empty burst, or running out of bursts, is a noinput
timeout. A timeout consumes nothing. Time is a fake clock that jumps over every wait, so nothing
really waits.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from helpline.ivr.channel import (
    ENQUEUE_OUTCOMES,
    TRANSFER_OUTCOMES,
    ConsentAnswer,
    ConsentPolicy,
    DeclineAction,
    EnqueueSpec,
    HttpPort,
    HttpResponse,
    RecordingMode,
    RecordingUnavailable,
)
from helpline.voice.prompt_spec import PromptSpec

HttpAnswer = HttpResponse | Mapping[str, Any] | str | Callable[..., Any]
Emit = Callable[[str, "str | None", dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class SimEvent:
    type: str
    node_id: str | None
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class HttpCall:
    method: str
    url: str
    headers: Mapping[str, str]
    body: str | None


class MockHttpPort:
    """Answers requests from a table keyed ``"METHOD url"`` or ``"url"`` (exact, else longest prefix).

    A value is an :class:`HttpResponse`, a mapping ``{"status": 200, "json": {...}}`` / ``{"text": ...}``,
    the strings ``"timeout"`` or ``"error"``, or a callable ``(method, url, headers, body)`` returning one.
    Unlisted URLs answer 404. Every request is kept in ``calls``.
    """

    def __init__(self, responses: Mapping[str, HttpAnswer] | None = None) -> None:
        self.responses = dict(responses or {})
        self.calls: list[HttpCall] = []

    def _lookup(self, method: str, url: str) -> HttpAnswer | None:
        for key in (f"{method} {url}", url):
            if key in self.responses:
                return self.responses[key]
        prefixes = [k for k in self.responses if url.startswith(k.split(" ", 1)[-1])
                    and (" " not in k or k.startswith(method + " "))]
        return self.responses[max(prefixes, key=len)] if prefixes else None

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: str | None,
        timeout: float,
    ) -> HttpResponse:
        import json

        self.calls.append(HttpCall(method, url, dict(headers), body))
        answer = self._lookup(method, url)
        if callable(answer):
            answer = answer(method, url, headers, body)
        if answer is None:
            return HttpResponse(404, "")
        if isinstance(answer, HttpResponse):
            return answer
        if answer == "timeout":
            raise TimeoutError(f"{method} {url}: simulated timeout after {timeout}s")
        if answer == "error":
            raise OSError(f"{method} {url}: simulated connection failure")
        if isinstance(answer, Mapping):
            text = json.dumps(answer["json"]) if "json" in answer else str(answer.get("text", ""))
            return HttpResponse(int(answer.get("status", 200)), text)
        raise ValueError(f"bad simulated HTTP answer for {method} {url}: {answer!r}")


@dataclass
class SimulatedRecording:
    """The simulator's :class:`~helpline.ivr.channel.RecordingControl`: the live recorder's gate and
    events without audio, and a log of what the flow asked for, for flow tests to assert on.

    ``mode`` is the resolved policy the flow sees. With ``fail_sensitive`` the recorder cannot confirm
    a pause, so sensitive nodes must not run. ``state`` is ``off``, ``recording`` or ``paused``;
    ``calls`` lists every request in order (``start:on``, ``start:refused``, ``pause:hold``,
    ``sensitive:on`` ...); ``sensitive_depth``/``max_sensitive_depth`` show the nesting.
    """

    mode: RecordingMode = "consent"
    decline_action: DeclineAction = "none"
    fail_sensitive: bool = False
    emit: Emit | None = None
    consents: list[ConsentAnswer] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    sensitive_depth: int = 0
    max_sensitive_depth: int = 0
    active: bool = False
    held: bool = False

    @property
    def state(self) -> str:
        if not self.active:
            return "off"
        return "paused" if self.held or self.sensitive_depth else "recording"

    @property
    def granted(self) -> bool:
        return self.mode != "none" and bool(self.consents) and self.consents[-1].outcome == "granted"

    def _event(self, type: str, data: dict[str, Any]) -> None:
        if self.emit is not None:
            self.emit(type, None, data)

    def _transition(self, before: str, reason: str) -> None:
        after = self.state
        if before == "recording" and after == "paused":
            self._event("recording.paused", {"reason": reason})
        elif before == "paused" and after == "recording":
            self._event("recording.resumed", {"reason": reason})

    def policy(self) -> ConsentPolicy:
        return ConsentPolicy(self.mode, allow_continue=self.mode == "notify",
                             decline_action=self.decline_action, policy_id="simulated",
                             policy_version=self.mode)

    async def consent(self, answer: ConsentAnswer) -> None:
        self.consents.append(answer)
        self.calls.append(f"consent:{answer.outcome}")
        self._event("recording.consent",
                    {"outcome": answer.outcome, "method": answer.method, "mode": answer.mode})
        if self.active and answer.outcome != "granted":
            self.active = False
            self._event("recording.withdrawn", {"outcome": answer.outcome})

    async def start(self) -> bool:
        if not self.granted:
            self.calls.append("start:refused")
            return False
        self.calls.append("start:on")
        if not self.active:
            self.active = True
            self._event("recording.started", {"paused": self.state == "paused"})
        return True

    async def stop(self) -> None:
        self.calls.append("stop")
        if self.active:
            self.active = False
            self._event("recording.stopped", {})

    async def pause(self, reason: str) -> None:
        self.calls.append(f"pause:{reason}")
        before, self.held = self.state, True
        self._transition(before, reason)

    async def resume(self, reason: str) -> None:
        self.calls.append(f"resume:{reason}")
        before, self.held = self.state, False
        self._transition(before, reason)

    async def sensitive(self, on: bool) -> None:
        if on and self.fail_sensitive:
            self.calls.append("sensitive:unavailable")
            raise RecordingUnavailable("the simulated recorder did not confirm the pause")
        if not on and self.sensitive_depth == 0:
            raise AssertionError("sensitive(False) without a matching sensitive(True)")
        self.calls.append("sensitive:on" if on else "sensitive:off")
        before = self.state
        self.sensitive_depth += 1 if on else -1
        self.max_sensitive_depth = max(self.max_sensitive_depth, self.sensitive_depth)
        self._transition(before, "sensitive")


def parse_at(text: str) -> datetime:
    """``"2026-12-24T17:59 Europe/Berlin"`` (zone optional, UTC by default) as an aware datetime."""
    stamp, _, zone = text.strip().partition(" ")
    moment = datetime.fromisoformat(stamp)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(zone.strip()) if zone.strip() else UTC)
    return moment


@dataclass
class SimulatedChannel:
    """Implements :class:`~helpline.ivr.channel.Channel` with scripted digits and outcomes."""

    inputs: Sequence[str] = ()
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    http: HttpPort = field(default_factory=MockHttpPort)
    transfer_result: str = "connected"
    enqueue_result: str = "timeout"
    caller: str = "+15550100001"
    did: str = "+15550100000"
    call_id: str = "sim"
    events: list[SimEvent] = field(default_factory=list)
    played: list[PromptSpec] = field(default_factory=list)
    hung_up: int | bool | None = False
    transfers: list[str] = field(default_factory=list)
    enqueued: list[tuple[str, EnqueueSpec]] = field(default_factory=list)
    masking: bool = False
    recording: SimulatedRecording = field(default_factory=SimulatedRecording)

    def __post_init__(self) -> None:
        self.recording.emit = self.emit
        if self.transfer_result not in TRANSFER_OUTCOMES:
            raise ValueError(f"transfer result must be one of {TRANSFER_OUTCOMES}")
        if self.enqueue_result not in ENQUEUE_OUTCOMES:
            raise ValueError(f"enqueue result must be one of {ENQUEUE_OUTCOMES}")
        self._bursts: deque[str] = deque(self.inputs)
        self._buffer: deque[str] = deque()
        self._armed = False
        self._elapsed = 0.0

    def mask_input(self, on: bool) -> None:
        self.masking = on

    @property
    def unused_inputs(self) -> list[str]:
        return list(self._bursts)

    def _advance(self, seconds: float) -> None:
        self._elapsed += seconds

    async def play(self, prompts: Sequence[PromptSpec], *, barge_in: bool) -> str | None:
        self.played.extend(prompts)
        self._armed = True
        if barge_in and self._buffer:
            return self._buffer.popleft()
        self._advance(sum(p.duration_ms for p in prompts) / 1000)
        return None

    async def next_digit(self, timeout: float) -> str | None:
        if not self._buffer and self._armed and self._bursts:
            self._buffer.extend(self._bursts.popleft())
            self._armed = False
        if self._buffer:
            return self._buffer.popleft()
        self._armed = False
        self._advance(timeout)
        return None

    def flush_digits(self) -> None:
        self._buffer.clear()

    async def pause(self, seconds: float) -> None:
        self._advance(seconds)

    async def transfer(self, target: str, timeout: float) -> str:
        self.transfers.append(target)
        return self.transfer_result

    async def enqueue(self, queue: str, spec: EnqueueSpec) -> str:
        self.enqueued.append((queue, spec))
        self._advance(spec.timeout if self.enqueue_result == "timeout" else 0)
        return self.enqueue_result

    async def hangup(self, sip_code: int | None = None) -> None:
        self.hung_up = sip_code if sip_code is not None else True
        self.events.append(SimEvent("sim.hangup", None, {"sip_code": sip_code}))

    def now(self) -> datetime:
        return self.at + timedelta(seconds=self._elapsed)

    def emit(self, type: str, node_id: str | None, data: dict[str, Any]) -> None:
        self.events.append(SimEvent(type, node_id, data))


def describe_event(event: SimEvent) -> str | None:
    """One transcript line per event the caller would care about (``None`` to leave it out)."""
    d = event.data
    match event.type:
        case "ivr.flow_started":
            return f"flow {d['flow']} (version {d['version']})"
        case "ivr.prompt_played":
            cut = " [interrupted]" if d.get("interrupted_by") else ""
            return "play " + " | ".join(d["prompts"]) + cut
        case "ivr.input":
            action = f" ({d['action']})" if d.get("action") else ""
            return f"input {d['value']}{action}"
        case "ivr.noinput":
            return f"noinput {d['count']}/{d['max']}"
        case "ivr.nomatch":
            return f"nomatch {d['count']}/{d['max']}: {d['value']}"
        case "ivr.variable_set":
            return f"set {d['name']} = {d['value']!r}"
        case "ivr.milestone":
            return f"milestone {d['name']}"
        case "ivr.http":
            return f"http {d['method']} {d['url']} -> {d.get('status', d['result'])}"
        case "ivr.transfer":
            return f"transfer {d['target']} -> {d['result']}"
        case "ivr.enqueue":
            return f"enqueue {d['queue']} -> {d['result']}" if "result" in d else None
        case "ivr.error":
            return f"error at {event.node_id}: {d['error']}"
        case "ivr.outcome":
            return f"outcome {d['outcome']}" + (f" (flow {d['flow']})" if "flow" in d else "")
        case "ivr.recording":
            return f"recording {d['action']}" + (f" -> {d['result']}" if "result" in d else "")
        case "recording.consent":
            return f"consent {d['outcome']} ({d['method']}, mode {d['mode']})"
        case "recording.started" | "recording.stopped" | "recording.withdrawn":
            return event.type.replace(".", " ")
        case "recording.paused" | "recording.resumed":
            return f"{event.type.replace('.', ' ')} ({d['reason']})"
        case "sim.hangup":
            return "hangup" + (f" {d['sip_code']}" if d.get("sip_code") else "")
    return None
