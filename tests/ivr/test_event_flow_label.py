"""Every ``ivr.node_entered`` and ``ivr.outcome`` names the flow it belongs to, so the metrics sink
credits a parent's nodes to the parent after a subflow returned."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from helpline.events.metrics import MetricsSink
from helpline.events.model import DomainEvent
from helpline.ivr.testing import arun_flow_test


async def test_parent_and_child_events_carry_their_flow(write_flow: Callable[..., Path]) -> None:
    write_flow("""\
nodes:
  - id: start
    type: pause
    ms: 10
    next: done
  - id: done
    type: return
""", name="child")
    parent = write_flow("""\
nodes:
  - id: start
    type: subflow
    flow: child
    next: {done: after}
  - id: after
    type: pause
    ms: 10
    next: bye
  - id: bye
    type: hangup
""", name="parent")
    t = await arun_flow_test(parent)
    labelled = [(e.type, e.node_id, e.data.get("flow")) for e in t.events
                if e.type in ("ivr.node_entered", "ivr.outcome")]
    assert labelled == [
        ("ivr.node_entered", "start", "parent"),
        ("ivr.node_entered", "start", "child"),
        ("ivr.node_entered", "done", "child"),
        ("ivr.outcome", None, "child"),
        ("ivr.node_entered", "after", "parent"),
        ("ivr.node_entered", "bye", "parent"),
        ("ivr.outcome", None, "parent"),
    ]

    sink = MetricsSink()
    at = datetime.now(UTC)
    sink(DomainEvent("call.offered", "c1", {"trunk": "sim"}, at))
    sink(DomainEvent("call.answered", "c1", {"flow_id": "parent"}, at))
    for event in t.events:
        sink(DomainEvent(event.type, "c1", event.data, at, event.node_id))

    def nodes(flow: str, node_type: str) -> float | None:
        labels = {"flow": flow, "node_type": node_type}
        return sink.registry.get_sample_value("helpline_ivr_nodes_total", labels)

    assert (nodes("parent", "pause"), nodes("child", "pause")) == (1.0, 1.0)
    assert (nodes("parent", "hangup"), nodes("child", "hangup")) == (1.0, None)
