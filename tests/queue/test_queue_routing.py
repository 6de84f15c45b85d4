"""Routing decisions of the pure engine: who gets which caller, when, and why not the others."""

from __future__ import annotations

import json

import pytest

from helpline.queue.config import QueueConfig, RelaxationStep, RonaPolicy, RoutingPolicy
from helpline.queue.engine import RoutingEngine, UnknownAgent
from helpline.queue.trace import expand_candidates
from tests.queue.queue_world import World


def policy(**kw: object) -> QueueConfig:
    return QueueConfig(policy=RoutingPolicy(**kw))


# ---------------------------------------------------------------- skills and proficiency


@pytest.mark.parametrize(
    ("agents", "requirements", "chosen"),
    [
        # (extension, skills) in join order; the requirement decides who qualifies
        ([("100", {"spanish": 2}), ("101", {"spanish": 4})], "spanish >= 3", "101"),
        ([("100", {"spanish": 5}), ("101", {"spanish": 4})], "spanish >= 3", "100"),  # proficiency
        ([("100", {"spanish": 3, "billing": 1}), ("101", {"spanish": 3, "billing": 4})],
         "spanish >= 3 and billing >= 1", "101"),  # sum of the referenced skills
        ([("100", {"english": 9}), ("101", {"spanish": 1})], "spanish", "101"),  # any level
        ([("100", {"french": 1}), ("101", {"english": 1})], "not french", "101"),
        ([("100", {"spanish": 1}), ("101", {})], "spanish >= 3", None),
    ],
)  # fmt: skip
def test_skills_and_proficiency(
    agents: list[tuple[str, dict[str, int]]], requirements: str, chosen: str | None
) -> None:
    world = World()
    for ext, skills in agents:
        world.agent(ext, skills)
    world.call("c1", requirements=requirements)
    offers = world.route()
    assert [o.extension for o in offers] == ([chosen] if chosen else [])


def test_node_and_queue_requirements_both_apply() -> None:
    world = World({"q": QueueConfig(requirements="billing >= 2")})
    world.agent("100", {"spanish": 5, "billing": 1})
    world.agent("101", {"spanish": 1, "billing": 5})
    world.agent("102", {"spanish": 3, "billing": 2})
    world.call("c1", requirements="spanish >= 3")
    (offer,) = world.route()
    assert offer.extension == "102"
    assert offer.trace.requirements == "(spanish >= 3) and (billing >= 2)"
    assert offer.trace.why_not("100") == "requirements: billing >= 2: agent has billing=1"
    assert offer.trace.why_not("101") == "requirements: spanish >= 3: agent has spanish=1"


def test_tier_before_proficiency() -> None:
    world = World()
    world.agent("100", {"spanish": 9}, queues=[("q", 2)])
    world.agent("101", {"spanish": 3}, queues=[("q", 1)])
    world.call("c1", requirements="spanish")
    assert [o.extension for o in world.route()] == ["101"]


# ---------------------------------------------------------------- relaxation


def test_relaxation_after_time_keeps_age() -> None:
    step = RelaxationStep(after_s=30, requirements="spanish >= 2", add_priority=1)
    world = World({"q": policy(steps=(step,))})
    world.agent("100", {"spanish": 2})
    world.call("c1", requirements="spanish >= 4")
    assert world.route() == []
    world.advance(29.9)
    assert world.route() == []
    events = world.advance(0.1)
    assert [e.type for e in events] == ["queue.step"]
    assert events[0].data == {"queue": "q", "step": 0, "cause": "time", "requirements": "spanish >= 2",
                              "priority": 1, "wait_s": 30.0}  # fmt: skip
    (offer,) = world.route()
    assert offer.extension == "100"
    assert offer.trace.step == 0 and offer.trace.age_s == 30.0 and offer.trace.priority == 1


def test_relaxation_when_no_eligible_agent_is_ready() -> None:
    step = RelaxationStep(when="no_eligible_ready", requirements="spanish >= 1")
    world = World({"q": policy(steps=(step,))})
    world.agent("expert", {"spanish": 5})
    world.agent("junior", {"spanish": 1})
    world.call("warm", requirements="spanish >= 5")
    (first,) = world.route()
    assert first.extension == "expert"
    world.result(first, "answered")
    world.call("c1", requirements="spanish >= 5")  # the expert is talking: relax at once
    assert world.of_type("queue.step")[-1].data["cause"] == "no_eligible_ready"
    (offer,) = world.route()
    assert offer.extension == "junior" and offer.call_id == "c1"


def test_no_eligible_staffed_waits_while_the_expert_is_only_busy() -> None:
    step = RelaxationStep(when="no_eligible_staffed", requirements="")
    world = World({"q": policy(steps=(step,))})
    world.agent("expert", {"spanish": 5})
    world.agent("other", {})
    world.call("warm", requirements="spanish >= 5")
    world.result(world.route()[0], "answered")
    world.call("c1", requirements="spanish >= 5")
    assert world.of_type("queue.step") == [] and world.route() == []
    world.presence("expert", "logged_out")  # now nobody staffed can take c1: relax to any member
    assert world.of_type("queue.step")[-1].data["cause"] == "no_eligible_staffed"
    (offer,) = world.route()
    assert offer.extension == "other"


# ---------------------------------------------------------------- ordering


@pytest.mark.parametrize(
    ("ordering", "new_priority", "first"),
    [
        ("strict_priority", 1, "new"),  # any higher priority goes first
        ("aged_priority", 1, "old"),  # 1 point = 60 s < 100 s head start
        ("aged_priority", 2, "new"),  # 120 s > 100 s
    ],
)
def test_priority_against_age(ordering: str, new_priority: int, first: str) -> None:
    world = World({"q": policy(ordering=ordering, priority_step_s=60.0)})
    world.agent("100", ready=False)
    world.presence("100", "not_ready", "meeting")
    world.call("old")
    world.advance(100)
    world.call("new", priority=new_priority)
    world.presence("100", "ready")
    assert [o.call_id for o in world.route()] == [first]


def test_global_order_across_queues_and_longest_idle() -> None:
    world = World({"a": QueueConfig(), "b": QueueConfig()})
    world.agent("100", queues=["a", "b"])
    world.now = 5.0
    world.agent("101", queues=["a", "b"])  # ready later: idle for less time
    world.now = 10.0
    world.call("b-old", "b")
    (offer,) = world.route()
    assert offer.extension == "100"  # longest idle, whichever queue
    assert offer.trace.candidates[1].score == {"tier": 1, "proficiency": 0, "longest_idle": 5.0}
    world.result(offer, "answered")
    # two callers in different queues, one agent frees: the older caller wins across queues
    world.presence("101", "not_ready", "break")
    world.call("a-new", "a")
    world.advance(1)
    world.call("b-newer", "b")
    world.end("100")
    world.advance(10)  # wrap-up over
    offers = world.route()
    assert [(o.call_id, o.extension) for o in offers] == [("a-new", "100")]


def test_longest_idle_fairness_rotates_across_two_queues() -> None:
    world = World({"a": QueueConfig(wrapup_s=0), "b": QueueConfig(wrapup_s=0)})
    for ext in ("100", "101", "102"):
        world.agent(ext, queues=["a", "b"])
        world.advance(1)
    served: list[str] = []
    for i in range(9):
        world.call(f"c{i}", "a" if i % 2 else "b")
        (offer,) = world.route()
        served.append(offer.extension)
        world.result(offer, "answered")
        world.advance(1)
        world.end(offer.extension)
    assert served == ["100", "101", "102"] * 3


# ---------------------------------------------------------------- offer outcomes


def test_no_answer_requeues_with_age_kept_and_tries_the_next_agent() -> None:
    world = World()
    world.agent("100")
    world.advance(1)
    world.agent("101")
    world.call("c1")
    (first,) = world.route()
    assert first.extension == "100"
    world.advance(15)
    events = world.result(first, "no_answer")
    assert [e.type for e in events] == ["queue.offer_result", "agent.activity"]
    assert events[1].data["activity"] == "cooldown" and events[1].data["until"] == 26.0
    (second,) = world.route()
    assert second.extension == "101" and second.offer_id == "c1.2"
    assert second.trace.age_s == 15.0
    assert second.trace.why_not("100") == "cooldown until +10.0s"
    assert second.trace.trigger == "offer.no_answer c1.1"
    assert world.view("100")["consecutive_misses"] == 1


def test_answer_resets_misses_and_connects() -> None:
    world = World()
    world.agent("100")
    world.call("c1")
    world.result(world.route()[0], "rejected")
    world.advance(10)
    world.call("c2")
    (offer,) = world.route()
    assert offer.call_id == "c1"  # the older caller first
    world.advance(2)
    events = world.result(offer, "answered")
    kinds = [e.type for e in events]
    assert kinds == ["queue.offer_result", "queue.connected", "queue.left", "agent.activity"]
    assert events[1].data["wait_s"] == 12.0 and events[2].data["reason"] == "answered"
    view = world.view("100")
    assert (view["activity"], view["call_id"], view["consecutive_misses"]) == ("connected", "c1", 0)


def test_wrapup_blocks_every_queue() -> None:
    world = World({"a": QueueConfig(wrapup_s=30), "b": QueueConfig(wrapup_s=5)})
    world.agent("100", queues=["a", "b"])
    world.call("c1", "a")
    world.result(world.route()[0], "answered")
    world.advance(60)
    world.end("100")
    world.call("c2", "b")
    world.advance(29)
    assert world.route() == []
    assert world.engine.why_not("c2", "100") == "wrap-up until +1.0s"
    world.advance(1)
    idle = world.of_type("agent.activity")[-1]
    assert idle.data["activity"] == "idle"
    assert idle.data["handled"] == {
        "call_id": "c1",
        "queue": "a",
        "talk_s": 60.0,
        "hold_s": 0.0,
        "wrapup_s": 30.0,
    }
    assert [o.call_id for o in world.route()] == ["c2"]


def test_agent_wrapup_override_and_hold_accounting() -> None:
    world = World()
    world.agent("100", wrapup_s=2)
    world.call("c1")
    world.result(world.route()[0], "answered")
    world.advance(10)
    world.record(world.engine.hold("100", True, world.now))
    world.advance(5)
    world.record(world.engine.hold("100", False, world.now))
    world.advance(5)
    world.end("100")
    world.advance(2)
    handled = world.of_type("agent.activity")[-1].data["handled"]
    assert handled == {"call_id": "c1", "queue": "q", "talk_s": 15.0, "hold_s": 5.0, "wrapup_s": 2.0}


def test_unreachable_agent_gets_nothing() -> None:
    world = World({"q": QueueConfig(join_empty=())})
    world.agent("100", reachable=False)
    world.call("c1")
    assert world.route() == []
    assert world.engine.why_not("c1", "100") == "unreachable"
    world.record(world.engine.set_reachable("100", True, world.now))
    assert [o.extension for o in world.route()] == ["100"]


def test_caller_leaving_while_offered_frees_the_agent_without_penalty() -> None:
    world = World()
    world.agent("100")
    world.call("c1")
    (offer,) = world.route()
    world.advance(3)
    events = world.leave("c1")
    kinds = [e.type for e in events]
    assert kinds == ["queue.offer_result", "agent.activity", "queue.left"]
    assert events[0].data["outcome"] == "cancelled" and events[0].data["reason"] == "caller_left"
    assert events[2].data["short_abandon"] is True
    view = world.view("100")
    assert (view["activity"], view["consecutive_misses"], view["routable"]) == ("idle", 0, True)
    assert world.result(offer, "cancelled") == []  # the runtime's late report is harmless
    world.call("c2")
    assert [o.extension for o in world.route()] == ["100"]


# ---------------------------------------------------------------- join and leave rules


def test_join_rules() -> None:
    world = World({
        "full": QueueConfig(max_length=1),
        "shut": QueueConfig(open=False),
        "empty": QueueConfig(),
        "skill": QueueConfig(join_empty=("logged_out", "not_ready")),
    })  # fmt: skip
    world.agent("100", {"spanish": 3}, queues=["full", "empty", "skill"], ready=False)
    world.presence("100", "not_ready", "break")
    assert world.call("a", "full").outcome == "joined"
    assert world.call("b", "full").outcome == "full"
    assert world.call("c", "shut").reason == "closed"
    assert world.call("d", "nowhere").reason == "unknown_queue"
    assert world.call("e", "empty").outcome == "joined"  # not_ready still counts by default
    assert (world.call("f", "skill").outcome, world.call("g", "skill").reason) == ("closed", "empty")
    world.presence("100", "ready")
    assert world.call("h", "skill", requirements="french").reason == "empty"  # nobody qualifies
    assert world.call("i", "skill", requirements="spanish >= 3").outcome == "joined"
    refused = world.of_type("queue.refused")
    assert [e.data["reason"] for e in refused] == [
        "full",
        "closed",
        "unknown_queue",
        "empty",
        "empty",
        "empty",
    ]
    with pytest.raises(ValueError, match="already waiting"):
        world.call("a", "empty")
    # the same rules answer "could a caller join?" without changing anything (agent transfers ask it)
    engine = world.engine
    before = len(world.events)
    assert [engine.join_refusal(q) for q in ("full", "shut", "nowhere", "empty")] == [
        "full", "closed", "unknown_queue", None,
    ]  # fmt: skip
    assert engine.join_refusal("skill", "french") == "empty"
    assert engine.join_refusal("skill", "spanish >= 3") is None
    assert len(world.events) == before and engine.position("j") is None


def test_leave_when_empty() -> None:
    world = World({"q": QueueConfig(leave_empty=("logged_out", "not_ready"), join_empty=())})
    world.agent("100", ready=False)
    world.presence("100", "not_ready", "lunch")
    world.call("c1")
    events = world.advance(1)
    assert [(e.type, e.data["reason"]) for e in events] == [("queue.left", "left_empty")]
    assert world.engine.waiting_calls() == []


# ---------------------------------------------------------------- RONA and deferred presence


def test_rona_not_ready_after_n_counting_misses() -> None:
    rona = RonaPolicy(not_ready_after=2)
    world = World({"q": policy(rona=rona)})
    world.agent("100")
    world.call("c1")
    world.result(world.route()[0], "busy")  # busy does not count by default
    world.advance(15)
    world.result(world.route()[0], "no_answer")
    world.advance(10)
    assert world.view("100")["presence"] == "ready"
    world.result(world.route()[0], "unreachable")
    view = world.view("100")
    assert (view["presence"], view["reason"], view["consecutive_misses"]) == ("not_ready", "rona", 2)
    presence = world.of_type("agent.presence")[-1]
    assert presence.data["reason"] == "rona" and presence.data["misses"] == 2
    world.presence("100", "ready")
    assert world.view("100")["consecutive_misses"] == 0  # a manual change resets the count


def test_presence_change_during_an_offer_is_deferred() -> None:
    world = World()
    world.agent("100")
    world.call("c1")
    (offer,) = world.route()
    events = world.presence("100", "not_ready", "break")
    assert events[0].data["deferred"] is True and world.view("100")["presence"] == "ready"
    assert world.view("100")["deferred_presence"] == {"presence": "not_ready", "reason": "break"}
    events = world.result(offer, "answered")
    assert events[-1].type == "agent.presence" and events[-1].data["applied_deferred"] is True
    view = world.view("100")
    assert (view["presence"], view["reason"], view["activity"]) == ("not_ready", "break", "connected")
    world.end("100")
    world.advance(60)
    world.call("c2")
    assert world.route() == []
    assert world.engine.why_not("c2", "100") == "presence not_ready (break)"


def test_deferred_logout_after_a_miss_wins_over_cooldown() -> None:
    world = World()
    world.agent("100")
    world.call("c1")
    (offer,) = world.route()
    world.presence("100", "logged_out")
    world.result(offer, "no_answer")
    view = world.view("100")
    assert (view["presence"], view["activity"], view["consecutive_misses"]) == ("logged_out", "cooldown", 0)


# ---------------------------------------------------------------- invariants


def test_invariant_repair_of_a_ghost_offer() -> None:
    world = World()
    world.agent("100")
    world.call("c1")
    world.route()
    # a ghost: the engine loses the offer record (a bug elsewhere); the checker must repair it
    engine = world.engine
    engine._offers.clear()
    events = world.record(engine.check_invariants(world.now, live_calls=set()))
    repaired = [e.data["invariant"] for e in events if e.type == "agent.invariant_repaired"]
    assert repaired == ["offered => a live offer", "offering => a live offer"]
    assert world.view("100")["activity"] == "idle"
    assert [o.extension for o in world.route()] == ["100"]
    assert world.record(engine.check_invariants(world.now, live_calls=set())) == []


def test_reconcile_with_sip_truth_ends_a_ghost_call() -> None:
    world = World()
    world.agent("100")
    world.call("c1")
    world.result(world.route()[0], "answered")
    world.advance(30)
    assert world.record(world.engine.check_invariants(world.now, live_calls={"c1"})) == []
    events = world.record(world.engine.check_invariants(world.now, live_calls=set()))
    assert events[0].type == "agent.invariant_repaired" and events[0].data["call_id"] == "c1"
    assert world.view("100")["activity"] == "wrapup"


def test_stale_offer_is_dropped() -> None:
    world = World({"q": QueueConfig(ring_timeout_s=10)})
    world.agent("100")
    world.call("c1")
    world.route()
    world.advance(49)
    assert world.record(world.engine.check_invariants(world.now, live_calls=set())) == []
    world.advance(2)
    events = world.record(world.engine.check_invariants(world.now, live_calls=set()))
    assert events[0].data["invariant"] == "stale offer"
    assert world.view("100")["activity"] == "idle" and world.engine.waiting_calls() == ["c1"]


# ---------------------------------------------------------------- traces


def test_trace_answers_why_not_for_every_kind_of_exclusion() -> None:
    world = World({"q": QueueConfig(wrapup_s=10), "other": QueueConfig()})
    world.agent("busy")
    world.call("warm")
    world.result(world.route()[0], "answered")
    world.agent("wrap")
    world.call("warm2")
    world.result(world.route()[0], "answered")
    world.advance(5)
    world.end("wrap")
    world.agent("break", ready=False)
    world.presence("break", "not_ready", "break")
    world.agent("gone", reachable=False)
    world.agent("weak", {"spanish": 2})
    world.agent("good", {"spanish": 4})
    world.agent("outsider", {"spanish": 9}, queues=["other"])
    world.call("c1", requirements="spanish >= 3")
    (offer,) = world.route()
    trace = offer.trace
    assert trace.chosen == "good" and trace.tie_break == "score"
    expected = {
        "busy": "connected to a call",
        "wrap": "wrap-up until +10.0s",
        "break": "presence not_ready (break)",
        "gone": "unreachable",
        "weak": "requirements: spanish >= 3: agent has spanish=2",
        "outsider": "not a member of queue",
        "good": None,
    }
    assert {ext: trace.why_not(ext) for ext in expected} == expected
    as_json = json.loads(json.dumps(trace.to_dict()))
    assert (
        as_json["entry"]["call_id"] == "c1" and as_json["policy_version"] == QueueConfig(wrapup_s=10).version
    )
    expanded = expand_candidates(as_json)
    assert sorted(c["extension"] for c in expanded) == sorted(expected.keys() - {"outsider"})
    assert {c["extension"]: c.get("excluded_because") for c in expanded} == {
        c.extension: c.excluded_because for c in trace.candidates
    }
    assert all(c["score"] == next(x.score for x in trace.candidates if x.extension == c["extension"])
               for c in expanded if c["eligible"])
    offer_event = offer.events[1]
    assert offer_event.type == "queue.offer" and offer_event.data["trace"] == trace.to_dict()


def test_last_trace_of_a_waiting_caller_explains_the_wait() -> None:
    world = World({"q": QueueConfig(join_empty=())})
    world.agent("100", {"spanish": 1})
    world.call("c1", requirements="spanish >= 3")
    assert world.route() == []
    trace = world.engine.last_trace("c1")
    assert trace is not None and trace.chosen is None and trace.trigger == "query"
    assert trace.why_not("100") == "requirements: spanish >= 3: agent has spanish=1"


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        (("linear",), ["9", "9", "9", "9"]),  # extension order, numeric: 9 < 10 < 11
        (("round_robin",), ["9", "10", "11", "9"]),
        (("fewest_calls", "linear"), ["9", "10", "11", "9"]),
    ],
)
def test_classic_strategies(score: tuple[str, ...], expected: list[str]) -> None:
    world = World({"q": QueueConfig(wrapup_s=0, policy=RoutingPolicy(score=score))})
    for ext in ("11", "10", "9"):
        world.agent(ext)
    served = []
    for i in range(4):
        world.call(f"c{i}")
        (offer,) = world.route()
        served.append(offer.extension)
        world.result(offer, "answered")
        world.end(offer.extension)
    assert served == expected


def test_random_strategy_is_seeded_and_ties_use_the_hash() -> None:
    def pick(seed: int, call: str) -> str:
        world = World({"q": policy(score=("random",), random_seed=seed)})
        for ext in ("100", "101", "102", "103"):
            world.agent(ext)
        world.call(call)
        return world.route()[0].extension

    assert pick(1, "x") == pick(1, "x")
    assert len({pick(seed, "x") for seed in range(12)}) > 1
    world = World({"q": policy(score=("tier",))})
    world.agent("100")
    world.agent("101")
    world.call("c1")
    (offer,) = world.route()
    assert offer.trace.tie_break == "hash"


# ---------------------------------------------------------------- views and errors


def test_views_are_json() -> None:
    world = World()
    world.agent("100", {"spanish": 3})
    world.call("c1")
    world.call("c2")
    world.route()
    view = world.engine.queue_view("q", world.now)
    json.dumps(view)
    assert view["counts"]["waiting"] == 1 and view["counts"]["offering"] == 1
    assert [w["call_id"] for w in view["waiting"]] == ["c1", "c2"]
    json.dumps(world.engine.agents(world.now))
    json.dumps(world.engine.queues(world.now))
    with pytest.raises(UnknownAgent):
        world.engine.set_presence("nobody", "ready", None, 0.0)


def test_ewt_position_and_unknown() -> None:
    engine = RoutingEngine({"q": QueueConfig(join_empty=())})
    engine.enqueue("c1", "q", priority=0, requirements=None, data={}, now=0.0)
    ewt = engine.ewt("c1", 0.0)
    assert ewt is not None and ewt.method == "unknown" and ewt.p50_s is None and ewt.position == 1
    assert engine.ewt("nope", 0.0) is None


def test_config_reload_keeps_callers_and_drops_removed_queues() -> None:
    world = World({"a": QueueConfig(), "b": QueueConfig()})
    world.agent("100", {"spanish": 1}, queues=["a", "b"], ready=False)
    world.presence("100", "not_ready", "break")
    world.call("x", "a")
    world.call("y", "b")
    events = world.record(world.engine.configure({"a": QueueConfig(requirements="spanish >= 2")}, world.now))
    assert [(e.type, e.call_id, e.data.get("reason")) for e in events] == [("queue.left", "y", "left")]
    assert world.engine.queue_names == ["a"]
    assert world.view("100")["queues"] == [{"queue": "a", "tier": 1}]
    world.presence("100", "ready")
    assert [o.call_id for o in world.route()] == ["x"]  # joined before the stricter base: unchanged
    assert world.call("z", "a").reason == "empty"  # new callers get the new base: nobody qualifies


def test_position_without_anyone_staffed_is_the_rank_in_the_queue() -> None:
    world = World({"q": QueueConfig(join_empty=())})
    for call in ("c1", "c2", "c3"):
        world.call(call)
    assert [world.engine.position(c) for c in ("c1", "c2", "c3")] == [1, 2, 3]
