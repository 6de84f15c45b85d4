"""What /metrics shows besides the event-derived series: the health of the event pipeline itself."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from helpline.events.bus import EventBus
from helpline.events.metrics import CallbackCollector
from helpline.store.sink import StoreSink


def register_pipeline_metrics(registry: CollectorRegistry, bus: EventBus, sink: StoreSink) -> None:
    """Expose bus and store-sink counters (drops, failures, backlog), read at scrape time."""
    counters = {
        "helpline_events_live_dropped_total": (
            "Events dropped for lagging live subscribers",
            lambda: bus.live_dropped,
        ),
        "helpline_event_sink_errors_total": ("Event sink calls that raised", lambda: bus.sink_errors),
        "helpline_store_events_dropped_total": (
            "Events not stored because the store queue was full or closed",
            lambda: sink.dropped,
        ),
        "helpline_store_events_failed_total": (
            "Events the store gave up on after repeated errors",
            lambda: sink.failed,
        ),
        "helpline_store_write_errors_total": ("Failed store write attempts", lambda: sink.db_errors),
        "helpline_store_events_written_total": ("Events written to the store", lambda: sink.written),
    }
    gauges = {"helpline_store_queue_depth": ("Events waiting to be stored", lambda: sink.pending)}
    registry.register(CallbackCollector(counters=counters, gauges=gauges))
