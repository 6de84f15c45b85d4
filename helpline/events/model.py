"""The domain event: the one record every layer uses to say that something happened."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True, slots=True)
class DomainEvent:
    """Something that happened, published once on the bus and fanned out to every sink.

    ``data`` must be JSON-able and already masked by the producer: sinks store and show it as is.
    """

    type: str
    call_id: str | None
    data: Mapping[str, Any]
    at: datetime
    node_id: str | None = None

    @classmethod
    def now(
        cls,
        type: str,
        call_id: str | None = None,
        data: Mapping[str, Any] | None = None,
        node_id: str | None = None,
    ) -> DomainEvent:
        """Build an event stamped with the current UTC time; ``data`` is copied so later edits
        by the producer cannot change what the sinks see."""
        return cls(
            type=type,
            call_id=call_id,
            data=MappingProxyType(dict(data or {})),
            at=datetime.now(UTC),
            node_id=node_id,
        )

    @property
    def category(self) -> str:
        """The part before the first dot (``call``, ``ivr``, ``security``...)."""
        return self.type.partition(".")[0]


__all__ = ["DomainEvent"]
