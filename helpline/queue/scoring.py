"""Choosing among eligible agents: the queue policy's score vector, then a stable hash.

Each criterion of ``RoutingPolicy.score`` maps an agent to a value where *smaller is better*;
vectors compare lexicographically. The last resort is ``tie_hash(agent, call)``: a BLAKE2b digest,
so two agents with the same vector are split the same way on every run and never by list order.

* ``tier``: the membership tier (1 before 2).
* ``proficiency``: minus the sum of the agent's levels in the skills the active requirements read.
* ``longest_idle``: ``idle_since`` (earliest first; never idle yet counts as idle forever).
* ``fewest_calls``: calls answered.
* ``round_robin``: extension order, starting after the last agent this queue offered a call to.
* ``linear``: extension order (numeric extensions by value, then the others by text).
* ``random``: BLAKE2b of (policy seed, call, agent): stable for a given call, spread across calls.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from helpline.queue.agent_state import AgentState
from helpline.queue.config import ScoreCriterion
from helpline.queue.requirements import Requirement

ExtensionKey = tuple[int, int, str]


def extension_key(extension: str) -> ExtensionKey:
    """Numeric extensions in numeric order first ("99" before "100"), then the rest by text."""
    return (0, int(extension), extension) if extension.isdigit() else (1, 0, extension)


def stable_hash(*parts: str | int) -> int:
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def tie_hash(extension: str, call_id: str) -> int:
    return stable_hash("tie", extension, call_id)


def score_value(
    criterion: ScoreCriterion,
    agent: AgentState,
    *,
    queue: str,
    call_id: str,
    requirements: Requirement,
    rr_last: str | None,
    seed: int,
) -> Any:
    """One criterion's value for one agent (smaller is better)."""
    if criterion == "tier":
        return agent.tiers.get(queue, 9)
    if criterion == "proficiency":
        return -requirements.proficiency(agent.profile.skills)
    if criterion == "longest_idle":
        return agent.idle_since if agent.idle_since is not None else -math.inf
    if criterion == "fewest_calls":
        return agent.calls_answered
    if criterion == "round_robin":
        key = extension_key(agent.extension)
        return (0 if rr_last is None or key > extension_key(rr_last) else 1, key)
    if criterion == "linear":
        return extension_key(agent.extension)
    return stable_hash("random", seed, call_id, agent.extension)


def json_value(value: Any) -> Any:
    """A score value as the trace shows it."""
    if isinstance(value, float) and math.isinf(value):
        return None
    if isinstance(value, tuple):
        return [json_value(v) for v in value]
    return value
