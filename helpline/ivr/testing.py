"""Helpers for flow authors' pytest files: run a flow against the simulator, assert on the transcript.

    def test_after_hours():
        t = run_flow_test("flows/demo.yaml", at="2026-12-24T19:00 Europe/Berlin")
        t.assert_heard("closed")
        t.assert_outcome("hangup")
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from helpline.ivr.channel import RecordingMode
from helpline.ivr.interpreter import FlowResult, run_flow
from helpline.ivr.simulate import (
    HttpAnswer,
    MockHttpPort,
    SimEvent,
    SimulatedChannel,
    SimulatedRecording,
    describe_event,
    parse_at,
)
from helpline.ivr.snapshot import load_flow


@dataclass(frozen=True)
class Transcript:
    """What the caller went through, with assertions that print the transcript when they fail."""

    result: FlowResult
    channel: SimulatedChannel
    http: MockHttpPort

    @property
    def outcome(self) -> str:
        return self.result.outcome

    @property
    def variables(self) -> dict[str, Any]:
        return self.result.variables

    @property
    def events(self) -> list[SimEvent]:
        return self.channel.events

    @property
    def recording(self) -> SimulatedRecording:
        """What the flow asked of the recorder (consents, starts, pauses, sensitive nesting)."""
        return self.channel.recording

    @property
    def lines(self) -> list[str]:
        return [line for e in self.events if (line := describe_event(e)) is not None]

    @property
    def prompts(self) -> list[str]:
        return [p.describe() for p in self.channel.played]

    @property
    def milestones(self) -> list[str]:
        return [e.data["name"] for e in self.events if e.type == "ivr.milestone"]

    def text(self) -> str:
        return "\n".join(self.lines)

    def _fail(self, message: str) -> None:
        raise AssertionError(f"{message}\n--- transcript ---\n{self.text()}")

    def assert_outcome(self, outcome: str) -> None:
        if self.outcome != outcome:
            self._fail(f"expected outcome {outcome!r}, got {self.outcome!r}")

    def assert_heard(self, *fragments: str) -> None:
        """Each fragment appears in some prompt, and in this order."""
        start = 0
        for fragment in fragments:
            hits = [i for i, p in enumerate(self.prompts) if i >= start and fragment in p]
            if not hits:
                self._fail(f"never heard {fragment!r} (after prompt #{start})")
            start = hits[0] + 1

    def assert_not_heard(self, fragment: str) -> None:
        if any(fragment in p for p in self.prompts):
            self._fail(f"unexpectedly heard {fragment!r}")

    def assert_milestones(self, *names: str) -> None:
        if self.milestones != list(names):
            self._fail(f"expected milestones {list(names)}, got {self.milestones}")

    def assert_var(self, name: str, value: Any) -> None:
        if self.variables.get(name, object()) != value:
            self._fail(f"expected {name} == {value!r}, got {self.variables.get(name)!r}")

    def assert_visited(self, *node_ids: str) -> None:
        missing = [n for n in node_ids if n not in self.result.path]
        if missing:
            self._fail(f"never visited {missing}; path {self.result.path}")


async def arun_flow_test(
    path: str | Path,
    inputs: Sequence[str] = (),
    *,
    at: str | datetime | None = None,
    http: Mapping[str, HttpAnswer] | None = None,
    transfer: str = "connected",
    enqueue: str = "timeout",
    variables: Mapping[str, Any] | None = None,
    caller: str = "+15550100001",
    did: str = "+15550100000",
    recording: RecordingMode | SimulatedRecording = "consent",
) -> Transcript:
    """Load ``path`` (with sibling flows as subflows) and run it on a :class:`SimulatedChannel`.

    ``recording`` is the resolved recording mode the flow sees, or a prepared recorder.
    """
    flow = load_flow(path)
    port = MockHttpPort(http)
    when = parse_at(at) if isinstance(at, str) else at
    recorder = recording if isinstance(recording, SimulatedRecording) else SimulatedRecording(recording)
    channel = SimulatedChannel(
        inputs=list(inputs), http=port, transfer_result=transfer, enqueue_result=enqueue,
        caller=caller, did=did, at=when if when is not None else datetime.now(UTC), recording=recorder,
    )
    env: dict[str, Any] = {"trunk": "sim", **(variables or {})}
    result = await run_flow(flow, channel, env)
    return Transcript(result, channel, port)


def run_flow_test(path: str | Path, inputs: Sequence[str] = (), **kwargs: Any) -> Transcript:
    """Synchronous :func:`arun_flow_test` for plain (non-async) tests."""
    return asyncio.run(arun_flow_test(path, inputs, **kwargs))
