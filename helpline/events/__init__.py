"""Domain events and the one bus they all go through (see docs/architecture.md)."""

from helpline.events.bus import EventBus, LiveSubscription, Sink
from helpline.events.dispositions import DISPOSITIONS, Disposition
from helpline.events.model import DomainEvent

__all__ = ["DISPOSITIONS", "Disposition", "DomainEvent", "EventBus", "LiveSubscription", "Sink"]
