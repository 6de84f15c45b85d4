"""Runs a flow on a :class:`Channel`: node to node by outcome, with ``on_error`` recovery.

Caller hang-up arrives as task cancellation; ``CancelledError`` is never caught here, so it leaves
``run_flow`` at once and nothing more is emitted.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from helpline.ivr.channel import Channel, RecordingUnavailable
from helpline.ivr.context import RunContext, Secrets
from helpline.ivr.model import Flow, FlowEnd, NodeBase

log = logging.getLogger(__name__)

MAX_STEPS = 10_000
MAX_ERRORS = 20
MAX_DEPTH = 8


class FlowError(Exception):
    """A node failed in a way the flow can route around with ``on_error``."""


#: How many sensitive nodes enclose the running one. A flow and its subflows run in one task, so
#: this counts the nesting of that call's own sensitive nodes (a sensitive subflow around a
#: sensitive ``collect``) without any state on the channel.
_sensitive_depth: ContextVar[int] = ContextVar("sensitive_depth", default=0)


async def run_node(ctx: RunContext, node: NodeBase) -> str | FlowEnd:
    """Run ``node``; a ``sensitive`` one only once the recorder confirms the pause (fail closed).

    Every ``recording.sensitive(True)`` is paired with one ``sensitive(False)`` on any exit, and the
    caller's digits stay masked while any enclosing node is sensitive.
    """
    if not node.sensitive:
        return await node.run(ctx)
    channel = ctx.channel
    try:
        await channel.recording.sensitive(True)
    except RecordingUnavailable as exc:
        raise FlowError(f"recording could not be paused, so sensitive node {node.id!r} was not run: "
                        f"{exc}") from exc
    token = _sensitive_depth.set(_sensitive_depth.get() + 1)
    channel.mask_input(True)
    try:
        return await node.run(ctx)
    finally:
        _sensitive_depth.reset(token)
        # re-assert rather than clear: an inner node may have unmasked while an outer one still holds
        channel.mask_input(_sensitive_depth.get() > 0)
        try:
            await channel.recording.sensitive(False)
        except RecordingUnavailable as exc:
            # recording stays paused, which is the safe side; the call goes on
            log.warning("recording did not confirm leaving a sensitive node",
                        extra={"flow": ctx.flow.id, "node": node.id, "error": str(exc)})


@dataclass(frozen=True, slots=True)
class FlowResult:
    """How a run ended. ``variables`` hold real values; ``sensitive`` names those never to show."""

    outcome: str
    variables: dict[str, Any]
    path: list[str]
    sensitive: frozenset[str] = frozenset()
    outputs: dict[str, Any] | None = None


def _route(ctx: RunContext, node: NodeBase, outcome: str) -> str | FlowEnd:
    """The next node id for ``outcome`` (or the end), following the node's outcome rules."""
    rules = node.outcome_rules(ctx.flow.document.input_defaults)
    seen: set[str] = set()
    while outcome not in seen:
        seen.add(outcome)
        target = node.route_for(outcome) or ctx.flow.document.outcome_defaults.get(outcome)
        if target is not None:
            return target
        rule = rules.get(outcome)
        if rule is not None and rule.kind == "ends" and rule.flow_outcome:
            return FlowEnd(rule.flow_outcome)
        if rule is not None and rule.kind == "fallback" and rule.fallback:
            outcome = rule.fallback
            continue
        break
    raise FlowError(f"node {node.id!r} produced outcome {outcome!r} which leads nowhere")


async def execute(ctx: RunContext) -> FlowEnd:
    """Run ``ctx.flow`` from its entry until a node ends it."""
    flow = ctx.flow
    node_id: str = flow.entry
    via: str | None = None
    errors = 0
    for _ in range(MAX_STEPS):
        node = flow.nodes[node_id]
        ctx.node_id = node.id
        ctx.visits[node.id] += 1
        ctx.path.append(node.id if not ctx.depth else f"{flow.id}/{node.id}")
        ctx.emit("ivr.node_entered", {"type": node.type, "via": via})
        try:
            step = await run_node(ctx, node)
            if isinstance(step, FlowEnd):
                return step
            target = _route(ctx, node, step)
            if isinstance(target, FlowEnd):
                return target
            via, node_id = f"{node.id}:{step}", target
        except Exception as exc:  # CancelledError is a BaseException and passes through
            errors += 1
            message = ctx.secrets.mask_text(f"{type(exc).__name__}: {exc}")
            handler = node.on_error or flow.document.on_error
            log.warning(
                "ivr node failed",
                extra={"flow": flow.id, "node": node.id, "error": message, "handler": handler},
            )
            ctx.emit("ivr.error", {"error": message, "handler": handler})
            if handler is None or errors > MAX_ERRORS or handler == node.id:
                return FlowEnd("error")
            ctx.variables["error"] = message
            ctx.variables["error_node"] = node.id
            via, node_id = f"{node.id}:error", handler
    ctx.emit("ivr.error", {"error": f"flow ran {MAX_STEPS} steps without ending", "handler": None})
    return FlowEnd("error")


async def run_flow(flow: Flow, channel: Channel, variables: dict[str, Any]) -> FlowResult:
    """Run ``flow`` for one call. ``variables`` (caller, did, call_id, trunk ...) seed the flow's own."""
    env: dict[str, Any] = {**flow.document.variables, **variables}
    env.setdefault("call_id", channel.call_id)
    env.setdefault("caller", channel.caller)
    env.setdefault("did", channel.did)
    ctx = RunContext(flow=flow, channel=channel, variables=env, secrets=Secrets(), path=[])
    ctx.emit("ivr.flow_started", {"flow": flow.id, "version": flow.version})
    end = await execute(ctx)
    ctx.node_id = None
    ctx.emit("ivr.outcome", {"flow": flow.id, "outcome": end.outcome})
    return FlowResult(
        outcome=end.outcome,
        variables=env,
        path=ctx.path,
        sensitive=frozenset(ctx.secrets.names),
        outputs=dict(end.outputs) if end.returned else None,
    )
