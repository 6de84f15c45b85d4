"""Prometheus view of the domain events, on a registry of its own.

Label values come only from configuration (trunk names, flow ids) or from fixed sets (dispositions,
DTMF sources); never from callers. As a second guard every label accepts a bounded number of distinct
values and folds the rest into ``other``, so a buggy producer cannot blow up the time series.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from helpline.events.dispositions import DISPOSITIONS
from helpline.events.model import DomainEvent

logger = logging.getLogger(__name__)

OTHER = "other"
_SETUP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0)


class BoundedLabel:
    """Passes through at most ``limit`` distinct values of one label; later newcomers become
    ``other`` (logged once per label)."""

    def __init__(self, name: str, limit: int, allowed: Iterable[str] | None = None) -> None:
        self.name = name
        self._limit = limit
        self._allowed = frozenset(allowed) if allowed is not None else None
        self._seen: set[str] = set()
        self._warned = False

    def __call__(self, value: Any) -> str:
        text = str(value) if value not in (None, "") else "unknown"
        if self._allowed is not None:
            return text if text in self._allowed else OTHER
        if text in self._seen:
            return text
        if len(self._seen) < self._limit:
            self._seen.add(text[:64])
            return text[:64]
        if not self._warned:
            self._warned = True
            logger.warning("metric label %s reached %d values; folding into 'other'", self.name, self._limit)
        return OTHER


@dataclass
class _OpenCall:
    trunk: str
    offered_at: datetime
    flow: str = "unknown"


class MetricsSink:
    """Bus sink that turns domain events into Prometheus series. Call it from the loop thread."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        max_label_values: int = 200,
        max_open_calls: int = 100_000,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.calls_total = Counter(
            "helpline_calls_total", "Calls that reached a final state", ["trunk", "disposition"], registry=r
        )
        self.calls_active = Gauge(
            "helpline_calls_active", "Calls offered and not yet ended or refused", registry=r
        )
        self.call_setup_seconds = Histogram(
            "helpline_call_setup_seconds",
            "Time from INVITE offered to call answered",
            buckets=_SETUP_BUCKETS,
            registry=r,
        )
        self.security_events_total = Counter(
            "helpline_security_events_total", "Security events by type", ["type"], registry=r
        )
        self.ivr_nodes_total = Counter(
            "helpline_ivr_nodes_total", "IVR nodes entered", ["flow", "node_type"], registry=r
        )
        self.ivr_outcomes_total = Counter(
            "helpline_ivr_outcomes_total", "IVR outcomes reached", ["flow", "outcome"], registry=r
        )
        self.dtmf_total = Counter("helpline_dtmf_total", "DTMF digits received", ["source"], registry=r)
        self.queue_joined_total = Counter(
            "helpline_queue_joined_total", "Callers who joined a queue", ["queue"], registry=r
        )
        self.queue_refused_total = Counter(
            "helpline_queue_refused_total", "Callers a queue refused (full, closed)", ["queue", "outcome"],
            registry=r,
        )
        self.queue_left_total = Counter(
            "helpline_queue_left_total", "Callers who left a queue, by reason", ["queue", "reason"],
            registry=r,
        )
        self.queue_offers_total = Counter(
            "helpline_queue_offers_total", "Offers to agents, by result", ["queue", "result"], registry=r
        )
        self.queue_wait_seconds = Histogram(
            "helpline_queue_wait_seconds", "Wait from joining to an agent's answer", ["queue"],
            buckets=(5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0), registry=r,
        )
        self.recording_events_total = Counter(
            "helpline_recording_events_total",
            "Recording life-cycle events (consent, started, refused, paused, withdrawn, stored, "
            "recovered, failed...)", ["event", "outcome"], registry=r,
        )
        self.recorded_seconds_total = Counter(
            "helpline_recorded_seconds_total", "Seconds of audio sealed into storage", registry=r
        )

        self._trunk = BoundedLabel("trunk", max_label_values)
        self._disposition = BoundedLabel("disposition", max_label_values, allowed=DISPOSITIONS)
        self._security_type = BoundedLabel("type", max_label_values)
        self._flow = BoundedLabel("flow", max_label_values)
        self._node_type = BoundedLabel("node_type", max_label_values)
        self._outcome = BoundedLabel("outcome", max_label_values)
        self._dtmf_source = BoundedLabel("source", 8, allowed=("rtp", "info"))
        self._queue = BoundedLabel("queue", max_label_values)
        self._queue_reason = BoundedLabel("reason", 32)
        self._recording_event = BoundedLabel("event", 32)
        self._recording_outcome = BoundedLabel("outcome", 32)
        self._open: OrderedDict[str, _OpenCall] = OrderedDict()
        self._max_open = max_open_calls

    def __call__(self, event: DomainEvent) -> None:
        handler = self._handlers.get(event.type)
        if handler is not None:
            handler(self, event)
        elif event.type.startswith("recording."):
            self._recording(event)
        elif event.type.startswith("security."):
            self.security_events_total.labels(self._security_type(event.type.removeprefix("security."))).inc()

    def _offered(self, event: DomainEvent) -> None:
        if event.call_id is None or event.call_id in self._open:
            return
        if len(self._open) >= self._max_open:
            # A producer that never ends its calls: forget the oldest instead of growing forever.
            self._open.popitem(last=False)
            self.calls_active.dec()
        self._open[event.call_id] = _OpenCall(self._trunk(event.data.get("trunk")), event.at)
        self.calls_active.inc()

    def _answered(self, event: DomainEvent) -> None:
        call = self._open.get(event.call_id or "")
        if call is None:
            return
        if event.data.get("flow_id"):
            call.flow = self._flow(event.data["flow_id"])
        self.call_setup_seconds.observe(max(0.0, (event.at - call.offered_at).total_seconds()))

    def _final(self, event: DomainEvent, disposition: Any) -> None:
        call = self._open.pop(event.call_id or "", None)
        if call is None:
            trunk = self._trunk(event.data.get("trunk"))
        else:
            trunk = call.trunk
            self.calls_active.dec()
        self.calls_total.labels(trunk, self._disposition(disposition)).inc()

    def _refused(self, event: DomainEvent) -> None:
        self._final(event, "refused")

    def _ended(self, event: DomainEvent) -> None:
        self._final(event, event.data.get("disposition"))

    def _flow_of(self, event: DomainEvent) -> str:
        if event.data.get("flow"):
            return self._flow(event.data["flow"])
        call = self._open.get(event.call_id or "")
        return call.flow if call is not None else "unknown"

    def _flow_started(self, event: DomainEvent) -> None:
        call = self._open.get(event.call_id or "")
        if call is not None and event.data.get("flow"):
            call.flow = self._flow(event.data["flow"])

    def _node_entered(self, event: DomainEvent) -> None:
        node_type = event.data.get("node_type", event.data.get("type"))
        self.ivr_nodes_total.labels(self._flow_of(event), self._node_type(node_type)).inc()

    def _outcome_reached(self, event: DomainEvent) -> None:
        outcome = event.data.get("outcome", event.data.get("name"))
        self.ivr_outcomes_total.labels(self._flow_of(event), self._outcome(outcome)).inc()

    def _dtmf(self, event: DomainEvent) -> None:
        self.dtmf_total.labels(self._dtmf_source(event.data.get("source"))).inc()

    def _queue_joined(self, event: DomainEvent) -> None:
        self.queue_joined_total.labels(self._queue(event.data.get("queue"))).inc()

    def _queue_refused(self, event: DomainEvent) -> None:
        queue = self._queue(event.data.get("queue"))
        self.queue_refused_total.labels(queue, self._queue_reason(event.data.get("outcome"))).inc()

    def _recording(self, event: DomainEvent) -> None:
        data = event.data
        outcome = data.get("outcome") or data.get("reason") or data.get("stage") or "none"
        name = self._recording_event(event.type.removeprefix("recording."))
        self.recording_events_total.labels(name, self._recording_outcome(outcome)).inc()
        seconds = data.get("duration_s")
        if event.type in ("recording.stored", "recording.recovered") and isinstance(seconds, int | float):
            self.recorded_seconds_total.inc(max(0.0, float(seconds)))

    def _queue_left(self, event: DomainEvent) -> None:
        queue = self._queue(event.data.get("queue"))
        self.queue_left_total.labels(queue, self._queue_reason(event.data.get("reason"))).inc()

    def _queue_offer_result(self, event: DomainEvent) -> None:
        queue = self._queue(event.data.get("queue"))
        self.queue_offers_total.labels(queue, self._queue_reason(event.data.get("outcome"))).inc()

    def _queue_connected(self, event: DomainEvent) -> None:
        wait = event.data.get("wait_s")
        if isinstance(wait, int | float):
            queue = self._queue(event.data.get("queue"))
            self.queue_wait_seconds.labels(queue).observe(max(0.0, float(wait)))

    _handlers: Mapping[str, Callable[[MetricsSink, DomainEvent], None]] = {
        "call.offered": _offered,
        "call.answered": _answered,
        "call.refused": _refused,
        "call.ended": _ended,
        "ivr.flow_started": _flow_started,
        "ivr.node_entered": _node_entered,
        "ivr.outcome": _outcome_reached,
        "dtmf.received": _dtmf,
        "queue.joined": _queue_joined,
        "queue.refused": _queue_refused,
        "queue.left": _queue_left,
        "queue.offer_result": _queue_offer_result,
        "queue.connected": _queue_connected,
    }


class CallbackCollector(Collector):
    """Exposes counters and gauges owned by other objects (bus drops, store backlog) by reading
    them at scrape time, so those objects need not know about Prometheus."""

    def __init__(
        self,
        counters: Mapping[str, tuple[str, Callable[[], float]]] | None = None,
        gauges: Mapping[str, tuple[str, Callable[[], float]]] | None = None,
    ) -> None:
        self._counters = dict(counters or {})
        self._gauges = dict(gauges or {})

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        for name, (doc, read) in self._counters.items():
            yield CounterMetricFamily(name, doc, value=read())
        for name, (doc, read) in self._gauges.items():
            yield GaugeMetricFamily(name, doc, value=read())
