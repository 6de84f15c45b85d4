"""The one domain event bus: every event goes through here exactly once.

Sinks (store, metrics) are plain callables run synchronously by ``publish``; they must only
enqueue or update counters. Live views get their own bounded buffer so a slow websocket can never
slow down a call: when it lags, its oldest events are dropped and counted.

The bus lives on the event loop thread: ``publish`` must be called from that thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from types import TracebackType

from helpline.events.model import DomainEvent

logger = logging.getLogger(__name__)

Sink = Callable[[DomainEvent], None]


class LiveSubscription(AsyncIterator[DomainEvent]):
    """One live consumer's bounded buffer; registered on creation so no event is missed between
    ``bus.live()`` and the first ``async for`` step."""

    def __init__(self, bus: EventBus, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("live buffer size must be at least 1")
        self._bus = bus
        self._buffer: deque[DomainEvent] = deque(maxlen=maxsize)
        self._ready = asyncio.Event()
        self._closed = False
        self.dropped = 0
        """Events discarded because this consumer lagged behind."""

    def _offer(self, event: DomainEvent) -> None:
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1
            self._bus._live_dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.warning(
                    "live subscriber lags; dropping oldest events",
                    extra={"dropped": self.dropped, "event_type": event.type},
                )
        self._buffer.append(event)
        self._ready.set()

    def __aiter__(self) -> LiveSubscription:
        return self

    async def __anext__(self) -> DomainEvent:
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        return self._buffer.popleft()

    def close(self) -> None:
        """Stop receiving; a pending ``__anext__`` ends the iteration once the buffer is drained."""
        if not self._closed:
            self._closed = True
            self._bus._live.discard(self)
            self._ready.set()

    async def __aenter__(self) -> LiveSubscription:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class EventBus:
    """Fans every published event out to the subscribed sinks and live subscribers."""

    def __init__(self, live_buffer: int = 1000) -> None:
        self._sinks: list[Sink] = []
        self._live: set[LiveSubscription] = set()
        self._live_buffer = live_buffer
        self._live_dropped = 0
        self.sink_errors = 0
        """Sink calls that raised (each one logged)."""

    def subscribe(self, sink: Sink) -> None:
        """Add a sink; it is called synchronously for every event, so it must not block."""
        self._sinks.append(sink)

    def unsubscribe(self, sink: Sink) -> None:
        self._sinks.remove(sink)

    def publish(self, event: DomainEvent) -> None:
        """Deliver ``event`` to every sink and live subscriber. Never blocks, never raises: a
        failing sink is logged with the event type and call id and the others still run."""
        for sink in self._sinks:
            try:
                sink(event)
            except Exception:
                self.sink_errors += 1
                logger.exception(
                    "event sink %r failed",
                    sink,
                    extra={"event_type": event.type, "call_id": event.call_id},
                )
        for subscription in tuple(self._live):
            subscription._offer(event)

    def live(self, maxsize: int | None = None) -> LiveSubscription:
        """A new live subscription (use ``async with bus.live() as events: async for e in events``)."""
        subscription = LiveSubscription(self, maxsize or self._live_buffer)
        self._live.add(subscription)
        return subscription

    @property
    def live_dropped(self) -> int:
        """Events dropped across all live subscribers since start."""
        return self._live_dropped

    @property
    def live_subscribers(self) -> int:
        return len(self._live)
