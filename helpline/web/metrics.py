"""What /metrics shows besides the event-derived series: the health of the event pipeline and of the
media clock, recording's live state, and the SIP edge guard's bans and drops."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from helpline.events.bus import EventBus
from helpline.events.metrics import CallbackCollector
from helpline.recording.service import RecordingService
from helpline.sbc_bridge.guard import EdgeGuard
from helpline.store.sink import StoreSink
from helpline.voice import MediaEngine


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


def register_media_metrics(registry: CollectorRegistry, engine: MediaEngine) -> None:
    """The media clock's health: sessions, and ticks that came late or frames it had to skip; and RTP
    from foreign sources dropped by the sessions' strict-source latching (an attack signal).

    Late ticks are the first sign of an overloaded process (the benchmarks watch them); read at
    scrape time from ``MediaEngine.stats``.
    """
    counters = {
        "helpline_media_late_ticks_total": (
            "Media clock ticks that fired more than 5 ms late", lambda: engine.stats.late_ticks,
        ),
        "helpline_media_skipped_frames_total": (
            "Frames not sent because the clock stalled too long", lambda: engine.stats.skipped_frames,
        ),
        "helpline_media_frames_total": ("Frame slots the media clock has paced", lambda: engine.stats.frames),
        "helpline_rtp_foreign_packets_total": (
            "RTP packets dropped because they came from a source other than the latched one (RTP bleed)",
            lambda: engine.stats.foreign_packets,
        ),
    }
    gauges = {
        "helpline_media_sessions": ("Open RTP sessions", lambda: engine.stats.sessions),
        "helpline_media_sessions_sending": (
            "RTP sessions paced by the clock", lambda: engine.stats.active_sessions,
        ),
        "helpline_media_max_lateness_seconds": (
            "Worst lateness of a media clock tick so far", lambda: engine.stats.max_lateness_ms / 1000,
        ),
    }
    registry.register(CallbackCollector(counters=counters, gauges=gauges))


def register_recording_metrics(registry: CollectorRegistry, service: RecordingService) -> None:
    """Recording's live state, read at scrape time: calls capturing now, and the segment writer's
    backlog (segments waiting for the disk; it should stay near zero)."""
    gauges = {
        "helpline_recordings_capturing": (
            "Calls whose recording is capturing now", lambda: service.capturing,
        ),
        "helpline_recording_writer_backlog": (
            "Recording segments waiting to be written to the spool", lambda: service.writer.backlog,
        ),
    }
    registry.register(CallbackCollector(gauges=gauges))


DropCounts = Callable[[], Mapping[tuple[str, str], int]]
"""Messages and connections the guard dropped or refused so far, by (listener, reason)."""


class SecurityCollector(Collector):
    """The guard's state at scrape time: bans in force by kind, and what it dropped or refused by
    listener and reason. Reads only; expired bans are left for the guard to sweep, just not counted.
    Label values are the guard's fixed listener and reason names, never addresses."""

    def __init__(self, guard: EdgeGuard, dropped: DropCounts | None = None) -> None:
        self._guard = guard
        self._dropped = dropped

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        bans = GaugeMetricFamily(
            "helpline_security_bans_active", "Bans in force: sources banned and users locked", labels=["kind"]
        )
        now = time.time()
        kinds = Counter(e.ban.kind for e in list(self._guard.bans.entries.values()) if e.ends > now)
        for kind in ("source", "user"):
            bans.add_metric([kind], float(kinds[kind]))
        yield bans
        if self._dropped is None:
            return
        dropped = CounterMetricFamily(
            "helpline_security_dropped_total", "SIP messages and connections the guard dropped or refused",
            labels=["listener", "reason"],
        )  # fmt: skip
        for (listener, reason), count in sorted(self._dropped().items()):
            dropped.add_metric([listener, reason], float(count))
        yield dropped


def register_security_metrics(
    registry: CollectorRegistry, guard: EdgeGuard, dropped: DropCounts | None = None
) -> None:
    """``helpline_security_bans_active{kind}`` and, given the guard's ``dropped`` counts,
    ``helpline_security_dropped_total{listener,reason}``."""
    registry.register(SecurityCollector(guard, dropped))
