"""What /metrics shows besides the event-derived series: the health of the event pipeline and of the
media clock."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from helpline.events.bus import EventBus
from helpline.events.metrics import CallbackCollector
from helpline.recording.service import RecordingService
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
    """The media clock's health: sessions, and ticks that came late or frames it had to skip.

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
