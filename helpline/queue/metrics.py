"""Live queue and agent state for Prometheus, read from the runtime's views at scrape time.

Counters of what happened (joins, offers, abandons) come from the event bus like every other metric
(``helpline.events.metrics``); this collector adds what *is*: callers waiting, the longest wait, agents
by state. Label values come from configuration (queue names) and fixed state names only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class QueueStateCollector(Collector):
    """Gauges per queue and per agent state, computed from ``queues()`` and ``agents()`` snapshots."""

    def __init__(
        self, queues: Callable[[], list[dict[str, Any]]], agents: Callable[[], list[dict[str, Any]]]
    ) -> None:
        self._queues = queues
        self._agents = agents

    def collect(self) -> Iterable[GaugeMetricFamily]:
        waiting = GaugeMetricFamily(
            "helpline_queue_waiting", "Callers in the queue (waiting or being offered)", labels=["queue"]
        )
        longest = GaugeMetricFamily(
            "helpline_queue_longest_wait_seconds", "Age of the oldest waiting caller", labels=["queue"]
        )
        routable = GaugeMetricFamily(
            "helpline_queue_agents_routable", "Members who could take a call now", labels=["queue"]
        )
        staffed = GaugeMetricFamily(
            "helpline_queue_agents_staffed", "Members logged in and reachable", labels=["queue"]
        )
        aht = GaugeMetricFamily(
            "helpline_queue_aht_seconds", "Handle time estimate used for the EWT", labels=["queue"]
        )
        for view in self._queues():
            name = str(view.get("name"))
            counts = view.get("counts", {})
            waiting.add_metric([name], float(counts.get("waiting", 0)) + float(counts.get("offering", 0)))
            routable.add_metric([name], float(counts.get("routable", 0)))
            staffed.add_metric([name], float(counts.get("staffed", 0)))
            longest.add_metric([name], float(view.get("longest_wait_s") or 0.0))
            if view.get("aht_s") is not None:
                aht.add_metric([name], float(view["aht_s"]))
        by_state = GaugeMetricFamily(
            "helpline_agents", "Agents by presence and activity", labels=["presence", "activity"]
        )
        tally = Counter((str(a.get("presence")), str(a.get("activity"))) for a in self._agents())
        for (presence, activity), count in sorted(tally.items()):
            by_state.add_metric([presence, activity], float(count))
        yield from (waiting, longest, routable, staffed, aht, by_state)
