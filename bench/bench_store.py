"""StoreSink micro-benchmark: what persisting a call's events costs, on SQLite in a temp dir.

Prints a table and writes bench/results/store.json. Nothing here opens a network port::

    .venv/bin/python bench/bench_store.py [--calls 2000]

Each synthetic call publishes 12 events (call.offered, call.answered, eight ivr.*, dtmf.received,
call.ended). Calls overlap (about ``--concurrency`` live at once), so a batch mixes new calls, CDR
updates and plain events the way a busy server's does. Runs, each on a fresh database:

* ``burst``: every event queued at once, then ``flush()``: the sink's best case (full batches).
* ``paced``: ``--rate`` calls/s published in 10 ms ticks, the shape of ``helpline serve`` under load,
  once with the sink's default flush interval and once with the old 0.05 s.
* ``floor``: the same rows written with the stdlib ``sqlite3`` module in a worker thread, one
  ``executemany`` per table per 500-event transaction: no SQLAlchemy, no queue, no retry logic.

CPU is process CPU (event loop + database worker thread); "loop CPU" is the event-loop thread alone.
Event construction happens before the clock starts: it is the producers' cost, not the sink's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import platform
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import text  # noqa: E402

from helpline.events import DomainEvent  # noqa: E402
from helpline.store import Store, StoreSink, upgrade  # noqa: E402
from helpline.store.sink import cdr_changes  # noqa: E402

RESULTS = REPO / "bench" / "results" / "store.json"
EVENTS_PER_CALL = 12
FLOOR_BATCH = 500
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def call_events(index: int, start: datetime, spacing: timedelta) -> list[DomainEvent]:
    """One call's 12 events, with data shaped like the live call and IVR emit it."""
    cid = f"{index:032x}"
    offered = {
        "sip_call_id": f"{index}@192.0.2.10", "trunk": "carrier-a", "caller": f"+4416329{index % 100000:05d}",
        "caller_name": None, "did": "+441632960999", "pai": None, "verstat": "TN-Validation-Passed",
        "source": "192.0.2.10:5060", "transport": "udp",
    }  # fmt: skip
    body: list[tuple[str, str | None, dict[str, Any]]] = [
        ("call.offered", None, offered),
        ("call.answered", None, {"codec": "PCMU", "flow_id": "main", "flow_version": "7"}),
        ("ivr.flow_started", None, {"flow": "main", "version": "7"}),
        ("ivr.node_entered", "welcome", {"type": "play", "via": None}),
        ("ivr.prompt_played", "welcome", {"prompts": ["tone:440:300"], "barge_in": False}),
        ("ivr.node_entered", "menu", {"type": "menu", "via": "next"}),
        ("ivr.prompt_played", "menu", {"prompts": ["file:menu.wav"], "barge_in": True}),
        ("dtmf.received", None, {"digit": "1", "source": "rtp"}),
        ("ivr.input", "menu", {"value": "1", "masked": False}),
        ("ivr.milestone", "menu", {"name": "chose_sales"}),
        ("ivr.outcome", "menu", {"outcome": "sales"}),
        ("call.ended", None, {"disposition": "completed", "sip_code": 200, "reason": "bye", "by": "server"}),
    ]
    return [
        DomainEvent(type=t, call_id=cid, data=data, at=start + k * spacing, node_id=node)
        for k, (t, node, data) in enumerate(body)
    ]


def workload(calls: int, concurrency: int) -> list[list[DomainEvent]]:
    """Events in publish order, grouped per arrival tick: call i starts at tick i and its events are
    spread so about ``concurrency`` calls are live at any time."""
    spread = max(1, concurrency // (EVENTS_PER_CALL - 1))
    ticks: dict[int, list[tuple[int, DomainEvent]]] = {}
    for i in range(calls):
        events = call_events(i, T0 + timedelta(seconds=i), timedelta(seconds=spread))
        for k, event in enumerate(events):
            ticks.setdefault(i + k * spread, []).append((i, event))
    return [[e for _, e in sorted(ticks[t], key=lambda p: p[0])] for t in sorted(ticks)]


class Clock:
    """Wall, process CPU and loop-thread CPU between ``start`` and ``stop``."""

    def start(self) -> None:
        self.wall0, self.cpu0, self.loop0 = time.perf_counter(), time.process_time(), time.thread_time()

    def stop(self) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0
        self.loop = time.thread_time() - self.loop0


def figures(name: str, clock: Clock, calls: int, events: int, **extra: Any) -> dict[str, Any]:
    return {
        "run": name, "calls": calls, "events": events, "wall_s": round(clock.wall, 3),
        "events_per_s": round(events / clock.wall), "cpu_us_per_call": round(clock.cpu / calls * 1e6, 1),
        "loop_cpu_us_per_call": round(clock.loop / calls * 1e6, 1),
        "worker_cpu_us_per_call": round((clock.cpu - clock.loop) / calls * 1e6, 1), **extra,
    }  # fmt: skip


async def fresh_store(tmp: Path, name: str) -> tuple[Store, str]:
    url = f"sqlite:///{tmp / name}.db"
    await upgrade(url)
    return Store(url), url


async def run_burst(tmp: Path, ticks: list[list[DomainEvent]], calls: int) -> dict[str, Any]:
    store, _ = await fresh_store(tmp, "burst")
    sink = StoreSink(store, max_pending=10**7)
    sink.start()
    events = sum(len(t) for t in ticks)
    clock = Clock()
    clock.start()
    for tick in ticks:
        for event in tick:
            sink(event)
    await sink.flush()
    clock.stop()
    batches = sink.batches
    await sink.aclose()
    await check(store, calls, events, sink)
    await store.close()
    return figures("burst", clock, calls, events, batches=batches)


async def run_paced(
    tmp: Path, ticks: list[list[DomainEvent]], calls: int, rate: float, flush_interval: float | None
) -> dict[str, Any]:
    store, _ = await fresh_store(tmp, f"paced-{flush_interval}")
    sink = StoreSink(store) if flush_interval is None else StoreSink(store, flush_interval=flush_interval)
    interval = flush_interval if flush_interval is not None else sink_default_interval()
    sink.start()
    events = sum(len(t) for t in ticks)
    step = 0.01
    per_step = max(1, round(rate * step))  # arrival ticks (one new call each) per 10 ms
    clock = Clock()
    clock.start()
    loop = asyncio.get_running_loop()
    due = loop.time()
    for first in range(0, len(ticks), per_step):
        for tick in ticks[first : first + per_step]:
            for event in tick:
                sink(event)
        due += step
        await asyncio.sleep(max(0.0, due - loop.time()))
    await sink.flush()
    clock.stop()
    batches = sink.batches
    await sink.aclose()
    await check(store, calls, events, sink)
    await store.close()
    return figures(f"paced {rate:g}/s, flush {interval:g}s", clock, calls, events, batches=batches)


def sink_default_interval() -> float:
    default = StoreSink.__init__.__kwdefaults__ or {}
    return float(default.get("flush_interval", float("nan")))


async def check(store: Store, calls: int, events: int, sink: StoreSink) -> None:
    """The run is only a figure if everything landed: every CDR completed, every event stored."""
    page = await store.calls.list_calls(limit=1)
    assert sink.written == events and sink.failed == 0 and sink.dropped == 0, vars(sink)
    assert page.items and page.items[0].disposition == "completed"
    async with store.engine.connect() as conn:
        counts = [
            (await conn.execute(text(f"SELECT count(*) FROM {what}"))).scalar_one()
            for what in ("calls", "call_events", "calls WHERE ended_at IS NOT NULL")
        ]
    n_calls, n_events, n_done = counts
    assert (n_calls, n_events, n_done) == (calls, events, calls), (n_calls, n_events, n_done)


_UPDATED_TEXT = ("disposition", "sip_code", "end_reason", "codec", "flow_id", "flow_version")
_FLOOR_UPDATE = (
    "UPDATE calls SET "
    + ", ".join(f"{c} = coalesce(?, {c})" for c in (*_UPDATED_TEXT, "answered_at", "ended_at"))
    + " WHERE id = ?"
)


def floor_write(path: Path, events: list[DomainEvent]) -> None:
    """The same rows through plain sqlite3: executemany per table per transaction."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    seqs: dict[str, int] = {}

    def stamp(at: datetime) -> str:
        return at.astimezone(UTC).replace(tzinfo=None).isoformat(" ")

    for first in range(0, len(events), FLOOR_BATCH):
        new_calls: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        rows: list[tuple[Any, ...]] = []
        for event in events[first : first + FLOOR_BATCH]:
            cid = event.call_id
            assert cid is not None
            if event.type == "call.offered":
                d = event.data
                new_calls.append((cid, d["sip_call_id"], d["trunk"], d["caller"], d["did"], d["source"],
                                  d["transport"], stamp(event.at)))  # fmt: skip
            elif event.type.startswith("call."):
                c = cdr_changes(event)
                times = (stamp(c[k]) if k in c else None for k in ("answered_at", "ended_at"))
                updates.append((*(c.get(k) for k in _UPDATED_TEXT), *times, cid))
            seq = seqs[cid] = seqs.get(cid, 0) + 1
            rows.append((cid, seq, stamp(event.at), event.type, event.node_id, json.dumps(dict(event.data))))
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO calls (id, sip_call_id, trunk, caller, did, source, transport, started_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            new_calls,
        )
        conn.executemany(_FLOOR_UPDATE, updates)
        conn.executemany(
            "INSERT INTO call_events (call_id, seq, at, type, node_id, data) VALUES (?, ?, ?, ?, ?, ?)", rows
        )
        conn.execute("COMMIT")
    conn.close()


async def run_floor(tmp: Path, ticks: list[list[DomainEvent]], calls: int) -> dict[str, Any]:
    store, _ = await fresh_store(tmp, "floor")
    await store.close()
    events = [e for tick in ticks for e in tick]
    clock = Clock()
    clock.start()
    await asyncio.to_thread(floor_write, tmp / "floor.db", events)
    clock.stop()
    conn = sqlite3.connect(tmp / "floor.db")
    try:
        assert conn.execute("SELECT count(*) FROM call_events").fetchone()[0] == len(events)
    finally:
        conn.close()
    return figures("floor: sqlite3 executemany", clock, calls, len(events), batches=-(-len(events) // 500))


def table(rows: list[dict[str, Any]]) -> str:
    cols = ["run", "events_per_s", "cpu_us_per_call", "loop_cpu_us_per_call", "worker_cpu_us_per_call",
            "batches", "wall_s"]  # fmt: skip
    head = ["run", "events/s", "CPU µs/call", "loop µs/call", "worker µs/call", "batches", "wall s"]
    widths = [max(len(h), *(len(str(r[c])) for r in rows)) for h, c in zip(head, cols, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths, strict=True)))
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    ticks = workload(args.calls, args.concurrency)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp_name:
        tmp = Path(tmp_name)
        results.append(await run_floor(tmp, ticks, args.calls))
        results.append(await run_burst(tmp, ticks, args.calls))
        if not args.no_paced:
            results.append(await run_paced(tmp, ticks, args.calls, args.rate, None))
            if sink_default_interval() != 0.05:
                results.append(await run_paced(tmp, ticks, args.calls, args.rate, 0.05))
    return results


def cli() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100, help="calls live at once (default 100)")
    parser.add_argument("--rate", type=float, default=300.0, help="calls/s in the paced runs (default 300)")
    parser.add_argument("--no-paced", action="store_true", help="skip the paced runs (they take N/rate s)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        loop_name = "uvloop"
    except ImportError:
        runner = asyncio.Runner()
        loop_name = "asyncio"
    with runner:
        results = runner.run(main(args))
    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "python": platform.python_version(),
        "machine": platform.machine(), "loop": loop_name, "calls": args.calls,
        "events_per_call": EVENTS_PER_CALL, "concurrency": args.concurrency, "rate": args.rate,
        "default_flush_interval": sink_default_interval(), "results": results,
    }, indent=2) + "\n")  # fmt: skip
    print(f"written to {args.out}")


if __name__ == "__main__":
    cli()
