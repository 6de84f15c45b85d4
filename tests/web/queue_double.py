"""A small in-memory queue runtime implementing ``QueueView``: a stand-in for ``helpline.queue``'s
runtime (not for the API under test). It loads agents from the real store when told they changed,
keeps a presence per agent, and refuses presence changes for an agent marked busy."""

from __future__ import annotations

from typing import Any

from helpline.queue.config import QueueConfig
from helpline.store import AgentRepository


class QueueDouble:
    def __init__(self, agents: AgentRepository, configs: dict[str, QueueConfig]) -> None:
        self._repository = agents
        self.configs = configs
        self.live: dict[str, dict[str, Any]] = {}
        self.busy: set[str] = set()
        self.reloads: list[str] = []

    def agents(self) -> list[dict[str, Any]]:
        return [dict(self.live[ext]) for ext in sorted(self.live)]

    def agent(self, extension: str) -> dict[str, Any] | None:
        state = self.live.get(extension)
        return None if state is None else dict(state)

    def queues(self) -> list[dict[str, Any]]:
        return [view for name in sorted(self.configs) if (view := self.queue(name)) is not None]

    def queue(self, name: str) -> dict[str, Any] | None:
        if name not in self.configs:
            return None
        members = sorted(ext for ext, state in self.live.items() if name in state["queues"])
        ready = [ext for ext in members if self.live[ext]["presence"] == "ready"]
        return {"name": name, "waiting": 0, "members": members, "ready": ready}

    def queue_names(self) -> set[str]:
        return set(self.configs)

    def queue_config(self, name: str) -> QueueConfig | None:
        return self.configs.get(name)

    async def set_presence(self, extension: str, presence: str, reason: str | None) -> dict[str, Any]:
        if extension not in self.live:
            raise KeyError(extension)
        if extension in self.busy:
            raise ValueError(f"agent {extension} is on a call")
        self.live[extension].update(presence=presence, reason=reason)
        return dict(self.live[extension])

    async def agents_changed(self, extension: str) -> None:
        self.reloads.append(extension)
        stored = await self._repository.get(extension)
        if stored is None:
            self.live.pop(extension, None)
            return
        previous = self.live.get(extension, {"presence": "logged_out", "reason": None})
        self.live[extension] = {
            "extension": extension, "presence": previous["presence"], "reason": previous["reason"],
            "activity": "idle", "queues": [m.queue for m in stored.queues], "enabled": stored.enabled,
        }  # fmt: skip
