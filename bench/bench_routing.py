"""RoutingEngine decision latency: 1,000 agents, 8 queues with shared members, 2,000 waiting callers.

Prints a table and writes bench/results/routing.json. Pure CPU, no network::

    .venv/bin/python bench/bench_routing.py [--agents 1000] [--waiting 2000] [--samples 2000]

Agents have 2-4 skills out of 8 at levels 1-5 and belong to 2-4 of 8 queues (seeded, so every run
builds the same floor). Callers carry one of several requirement expressions; two queues add base
requirements. Runs, each timing one trigger at a time with ``time.perf_counter_ns``:

* ``contact surplus, agent frees``: every agent talking, ~2,000 callers waiting. One agent's call
  ends (no wrap-up) and ``next_offers`` runs: the agent must get the best caller across its queues.
  The offer is answered and a new caller joins, so the backlog stays at ~2,000.
* ``agent surplus, call arrives``: half the agents idle, plus ~2,000 callers waiting for a skill
  only busy agents have. A caller joins (``enqueue``, timed separately) and ``next_offers`` runs.
  The chosen agent answers and is freed again, so the surplus stays.
* ``agent surplus, agent frees``: same floor; an agent frees and nobody waiting can use them.
* ``ewt`` (one prediction with 2,000 waiting), ``tick`` and ``check_invariants`` (full pass).

The max column is dominated by the cyclic garbage collector's full passes over the ~10^5 objects
the floor holds; ``--no-gc`` shows the engine alone.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from helpline.queue.config import QueueConfig, RelaxationStep, RoutingPolicy  # noqa: E402
from helpline.queue.engine import RoutingEngine  # noqa: E402
from helpline.queue.profile import AgentProfile, Membership  # noqa: E402

RESULTS = REPO / "bench" / "results" / "routing.json"
SKILLS = ["english", "spanish", "french", "german", "billing", "tech", "sales", "retention"]
REQUIREMENTS = [
    None, "english >= 2", "spanish >= 3", "english >= 1 and billing >= 2", "tech >= 3 or sales >= 4",
    "french", "german >= 2 and not retention", "spanish >= 2 and tech >= 2",
]  # fmt: skip
RARE = "klingon >= 1"  # only a few agents have it; they are kept busy in the agent-surplus floor


def queues() -> dict[str, QueueConfig]:
    step = RelaxationStep(after_s=60, requirements="", add_priority=1)
    out = {f"q{i}": QueueConfig(wrapup_s=0, join_empty=(), max_length=None) for i in range(8)}
    out["q1"] = QueueConfig(wrapup_s=0, join_empty=(), requirements="billing >= 1")
    out["q2"] = QueueConfig(
        wrapup_s=0, join_empty=(), policy=RoutingPolicy(ordering="aged_priority", steps=(step,))
    )
    out["q3"] = QueueConfig(wrapup_s=0, join_empty=(), policy=RoutingPolicy(score=("fewest_calls", "linear")))
    out["q4"] = QueueConfig(wrapup_s=0, join_empty=(), requirements="english >= 1")
    return out


def floor(n_agents: int, rng: random.Random, *, rare_agents: int = 0) -> RoutingEngine:
    engine = RoutingEngine(queues())
    names = sorted(engine.queue_names)
    for i in range(n_agents):
        ext = str(1000 + i)
        skills = {s: rng.randint(1, 5) for s in rng.sample(SKILLS, rng.randint(2, 4))}
        if i < rare_agents:
            skills["klingon"] = 3
        members = tuple(
            Membership(queue=q, tier=rng.choice((1, 1, 2))) for q in rng.sample(names, rng.randint(2, 4))
        )
        engine.upsert_agent(AgentProfile(extension=ext, display_name=ext, skills=skills, queues=members), 0.0)
        engine.set_reachable(ext, True, 0.0)
        engine.set_presence(ext, "ready", None, 0.0)
    return engine


class Clock:
    def __init__(self) -> None:
        self.now = 1.0

    def step(self) -> float:
        self.now += 0.01
        return self.now


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter_ns()
    out = fn()
    return out, (time.perf_counter_ns() - t0) / 1e6


def summary(name: str, samples: list[float], **extra: Any) -> dict[str, Any]:
    ordered = sorted(samples)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]

    return {
        "run": name, "n": len(samples), "p50_ms": round(pct(0.5), 3), "p99_ms": round(pct(0.99), 3),
        "max_ms": round(ordered[-1], 3), "mean_ms": round(statistics.fmean(samples), 3), **extra,
    }  # fmt: skip


def contact_surplus(n_agents: int, waiting: int, samples: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    engine = floor(n_agents, rng)
    clock = Clock()
    names = engine.queue_names
    calls = 0

    def join() -> None:
        nonlocal calls
        calls += 1
        engine.enqueue(f"c{calls}", rng.choice(names), priority=rng.choice((0, 0, 0, 1)),
                       requirements=rng.choice(REQUIREMENTS), data={}, now=clock.step())  # fmt: skip

    talking: list[str] = []
    while len(talking) < n_agents * 0.98 or len(engine.waiting_calls()) < waiting:
        for _ in range(200):
            join()
        for offer in engine.next_offers(clock.step()):
            engine.offer_result(offer.offer_id, "answered", clock.now)
            talking.append(offer.extension)
    backlog = len(engine.waiting_calls())
    decide: list[float] = []
    end_to_end: list[float] = []
    offers_made = 0
    for _ in range(samples):
        ext = talking.pop(rng.randrange(len(talking)))
        now = clock.step()
        _, t_end = timed(lambda ext=ext, now=now: engine.call_ended(ext, now))  # type: ignore[misc]
        offers, t_decide = timed(lambda: engine.next_offers(clock.now))
        decide.append(t_decide)
        end_to_end.append(t_end + t_decide)
        for offer in offers:
            offers_made += 1
            engine.offer_result(offer.offer_id, "answered", clock.now)
            talking.append(offer.extension)
        join()
    return [
        summary("contact surplus, agent frees: next_offers", decide, waiting=backlog, offers=offers_made),
        summary("contact surplus, agent frees: call_ended + next_offers", end_to_end, waiting=backlog),
    ]


def agent_surplus(n_agents: int, waiting: int, samples: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    engine = floor(n_agents, rng, rare_agents=20)
    clock = Clock()
    names = engine.queue_names
    # keep the klingon speakers and half the floor busy
    busy: list[str] = []
    for i in range(n_agents // 2):
        engine.enqueue(
            f"warm{i}", names[i % len(names)], priority=0, requirements=None, data={}, now=clock.step()
        )
    for offer in engine.next_offers(clock.step()):
        engine.offer_result(offer.offer_id, "answered", clock.now)
        busy.append(offer.extension)
    for ext in (str(1000 + i) for i in range(20)):
        if ext not in busy:
            engine.set_presence(ext, "not_ready", "training", clock.step())
    for i in range(waiting):  # callers nobody idle can take
        engine.enqueue(
            f"stuck{i}", rng.choice(names), priority=0, requirements=RARE, data={}, now=clock.step()
        )
    assert engine.next_offers(clock.step()) == []
    backlog = len(engine.waiting_calls())
    join_t: list[float] = []
    decide: list[float] = []
    frees: list[float] = []
    for i in range(samples):
        req = rng.choice(REQUIREMENTS)
        queue = rng.choice(names)
        now = clock.step()
        (result, _), t_join = timed(
            lambda i=i, req=req, queue=queue, now=now: engine.enqueue(  # type: ignore[misc]
                f"new{i}", queue, priority=0, requirements=req, data={}, now=now
            )
        )
        join_t.append(t_join)
        offers, t_decide = timed(lambda: engine.next_offers(clock.now))
        decide.append(t_decide)
        for offer in offers:
            engine.offer_result(offer.offer_id, "answered", clock.now)
            now = clock.step()
            engine.call_ended(offer.extension, now)
            _, t_free = timed(lambda: engine.next_offers(clock.now))
            frees.append(t_free)
        if result.outcome == "joined" and not offers:
            engine.leave(f"new{i}", "abandoned", clock.step())
    ewt_t = [timed(lambda i=i: engine.ewt(f"stuck{i * 7 % waiting}", clock.now))[1] for i in range(200)]  # type: ignore[misc]
    tick_t = [timed(lambda: engine.tick(clock.step()))[1] for _ in range(50)]
    live = {a["call_id"] for a in engine.agents(clock.now) if a["call_id"]}
    inv_t = [timed(lambda: engine.check_invariants(clock.step(), live_calls=live))[1] for _ in range(20)]
    return [
        summary("agent surplus, call arrives: enqueue", join_t, waiting=backlog),
        summary("agent surplus, call arrives: next_offers", decide, waiting=backlog),
        summary("agent surplus, agent frees: next_offers", frees, waiting=backlog),
        summary("ewt (one caller)", ewt_t, waiting=backlog),
        summary("tick", tick_t, waiting=backlog),
        summary("check_invariants (full pass)", inv_t, waiting=backlog),
    ]


def table(results: list[dict[str, Any]]) -> str:
    head = f"{'run':58} {'n':>6} {'waiting':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{r['run']:58} {r['n']:>6} {r.get('waiting', ''):>7} {r['p50_ms']:>8.3f} "
                     f"{r['p99_ms']:>8.3f} {r['max_ms']:>8.3f}")  # fmt: skip
    return "\n".join(lines)


def cli() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--waiting", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-gc", action="store_true", help="cyclic GC off (shows what its pauses cost)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.no_gc:
        gc.disable()
    t0 = time.perf_counter()
    results = contact_surplus(args.agents, args.waiting, args.samples, args.seed)
    results += agent_surplus(args.agents, args.waiting, args.samples, args.seed)
    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "python": platform.python_version(),
        "machine": platform.machine(), "agents": args.agents, "waiting": args.waiting,
        "samples": args.samples, "seed": args.seed, "queues": len(queues()), "cyclic_gc": not args.no_gc,
        "wall_s": round(time.perf_counter() - t0, 1), "results": results,
    }, indent=2) + "\n")  # fmt: skip
    print(f"written to {args.out}")


if __name__ == "__main__":
    cli()
