"""A caller waiting in a queue, and the order in which waiting callers are served.

Ordering (one global order across every queue, research D5)
    Entries are served by ``(class desc, effective start asc, entry id asc)``:

    * ``strict_priority`` queues: class = priority, effective start = ``virtual_start``. A higher
      priority always goes first; within a priority, the oldest.
    * ``aged_priority`` queues: class = 0, effective start = ``virtual_start - priority *
      priority_step_s``. Priority is credit in seconds of waiting, so an old low-priority caller
      eventually overtakes a new high-priority one.

    Effective age (``now - effective start``) grows at the same rate for everyone, so the key never
    changes with time and entries stay sorted; it changes only when a relaxation step adds priority.
    When a strict queue and an aged queue share agents, the strict queue's classes compare against
    class 0 of the aged one.

``virtual_start`` is the age credit: it is kept across offer failures and relaxation steps, and a
caller moved from another queue can bring theirs along.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from helpline.queue.config import QueueConfig
from helpline.queue.requirements import Requirement

EntryKey = tuple[int, float, int]
EntryState = Literal["queued", "offering"]


@dataclass(frozen=True, slots=True)
class Prediction:
    """One EWT prediction made for this entry (kept to report its accuracy when the caller leaves)."""

    at: float
    position: int
    p50_s: float | None
    p90_s: float | None


@dataclass(slots=True)
class QueueEntry:
    seq: int  # entry id: unique, increasing in join order
    call_id: str
    queue: str
    base_priority: int
    priority: int  # base + the add_priority of every step applied so far
    joined_at: float
    virtual_start: float
    node_requirements: Requirement  # from the flow's enqueue node
    requirements: Requirement  # active: node AND queue base, until a step replaces them
    policy_version: str
    data: dict[str, Any]
    step_index: int = -1  # -1: no step applied yet
    step_entered_at: float = 0.0
    state: EntryState = "queued"
    offer_id: str | None = None
    attempts: int = 0
    checked_gen: int = -1  # engine generation at which no routable member qualified
    key: EntryKey = (0, 0.0, 0)
    predictions: list[Prediction] = field(default_factory=list)

    def age(self, now: float) -> float:
        return now - self.virtual_start

    def wait(self, now: float) -> float:
        return now - self.joined_at


def order_key(entry: QueueEntry, config: QueueConfig) -> EntryKey:
    """The entry's place in the global order; smaller sorts first."""
    policy = config.policy
    if policy.ordering == "aged_priority":
        return (0, entry.virtual_start - entry.priority * policy.priority_step_s, entry.seq)
    return (-entry.priority, entry.virtual_start, entry.seq)
