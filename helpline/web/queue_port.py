"""What the web layer needs from the running queue (``helpline.queue`` runtime): live views of agents
and queues, presence changes, and a nudge when the API has changed an agent in the database.

The runtime implements this protocol; the API never touches the routing engine directly. Everything
is JSON-able plain data, so the API shows it as is.
"""

from __future__ import annotations

from typing import Any, Protocol


class QueueView(Protocol):
    def agents(self) -> list[dict[str, Any]]:
        """Live state of every agent the runtime knows, one dict each with at least ``extension``."""
        ...

    def agent(self, extension: str) -> dict[str, Any] | None:
        """Live state of one agent; None when the runtime does not know it."""
        ...

    def queues(self) -> list[dict[str, Any]]:
        """Live view of every queue, one dict each with at least ``name``."""
        ...

    def queue(self, name: str) -> dict[str, Any] | None:
        """Live view of one queue; None for an unknown queue."""
        ...

    def queue_names(self) -> set[str]:
        """The configured queues: the names agent memberships may use."""
        ...

    def queue_config(self, name: str) -> Any | None:
        """The queue's ``QueueConfig`` (the API reads ``sl_threshold_s`` and ``short_abandon_s``)."""
        ...

    async def set_presence(self, extension: str, presence: str, reason: str | None) -> dict[str, Any]:
        """Log an agent in or out, ready or not; returns the agent's new live state.
        Raises ValueError (with a message for the operator) when the runtime refuses."""
        ...

    async def agents_changed(self, extension: str) -> None:
        """The API created, updated, deleted or changed the password of ``extension``: reload it
        from the database."""
        ...
