"""EWT: the Erlang-k quantile approximation, pool-aware positions, N_eff, handle-time learning."""

from __future__ import annotations

import math

import pytest

from helpline.queue.config import QueueConfig
from helpline.queue.ewt import HandleTimes, estimate, gamma_quantile
from tests.queue.queue_world import World


def erlang_cdf(k: int, theta: float, x: float) -> float:
    """Exact CDF of the sum of k exponential gaps of mean theta."""
    y = x / theta
    return 1.0 - math.exp(-y) * sum(y**n / math.factorial(n) for n in range(k))


def exact_quantile(k: int, theta: float, p: float) -> float:
    lo, hi = 0.0, 100.0 * k * theta
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if erlang_cdf(k, theta, mid) < p else (lo, mid)
    return lo


@pytest.mark.parametrize("k", [1, 2, 3, 5, 10, 30])
def test_wilson_hilferty_is_close_to_the_exact_erlang_quantiles(k: int) -> None:
    for p, z in ((0.5, 0.0), (0.9, 1.2815515655446004)):
        exact = exact_quantile(k, 60.0, p)
        assert gamma_quantile(k, 60.0, z) == pytest.approx(exact, rel=0.02)


def test_estimate_cases() -> None:
    assert estimate(3, 0.0, 0, 180.0).method == "unknown"
    idle = estimate(2, 3.0, 2, 180.0)
    assert (idle.p50_s, idle.p90_s) == (0.0, 0.0)
    busy = estimate(4, 2.0, 1, 120.0)  # 3 completions at rate 2/120 s: mean 180 s
    assert busy.p50_s is not None and busy.p90_s is not None
    assert 150 < busy.p50_s < 180 < busy.p90_s


def test_handle_times_ewma() -> None:
    times = HandleTimes(default_s=100.0, alpha=0.5)
    assert times.get("q") == 100.0
    times.observe("q", 200.0)
    assert times.get("q") == 150.0 and times.get("other") == 100.0


def test_position_counts_only_callers_competing_for_the_same_agents() -> None:
    world = World({"q": QueueConfig(join_empty=())})
    world.agent("en", {"english": 5})
    world.agent("es", {"spanish": 5})
    for i in range(3):  # everyone busy first
        world.call(f"warm{i}")
    for offer in world.route():
        world.result(offer, "answered")
    world.call("e1", requirements="english")
    world.advance(1)
    world.call("e2", requirements="english")
    world.advance(1)
    world.call("s1", requirements="spanish")
    world.advance(1)
    world.call("any")
    engine = world.engine
    assert [engine.position(c) for c in ("warm2", "e1", "e2", "s1", "any")] == [1, 2, 3, 2, 5]
    ewt = engine.ewt("s1", world.now)
    assert ewt is not None and ewt.position == 2 and ewt.n_eff == 1.0 and ewt.idle_eligible == 0
    assert ewt.p50_s is not None and ewt.p50_s > 180  # two completions of one agent, 180 s each


def test_n_eff_shares_agents_between_queues_with_callers() -> None:
    world = World({"a": QueueConfig(), "b": QueueConfig()})
    world.agent("100", queues=["a", "b"])
    world.agent("101", queues=["a"])
    world.call("x", "a")
    world.call("y", "b")
    for offer in world.route():
        world.result(offer, "answered")
    world.call("a1", "a")
    world.call("b1", "b")
    ewt_a = world.engine.ewt("a1", world.now)
    ewt_b = world.engine.ewt("b1", world.now)
    assert ewt_a is not None and ewt_b is not None
    assert ewt_a.n_eff == 1.5 and ewt_b.n_eff == 0.5


def test_predictions_are_reported_with_the_realised_wait() -> None:
    world = World({"q": QueueConfig(join_empty=())})
    world.call("c1")
    assert world.engine.ewt("c1", world.now) is not None
    world.advance(30)
    world.agent("100")
    world.advance(10)
    world.result(world.route()[0], "answered")
    outcome = world.of_type("queue.ewt_outcome")[-1]
    assert outcome.data["censored"] is False
    assert outcome.data["predictions"] == [
        {"at": 0.0, "position": 1, "p50_s": None, "p90_s": None, "realised_s": 40.0}
    ]


def test_handle_time_learns_from_finished_calls() -> None:
    world = World({"q": QueueConfig(wrapup_s=20)}, aht_default_s=100.0, aht_alpha=0.5)
    world.agent("100")
    world.call("c1")
    world.result(world.route()[0], "answered")
    world.advance(280)
    world.end("100")
    assert world.engine.handle_times.get("q") == 200.0  # 100 + 0.5 * (300 - 100)
