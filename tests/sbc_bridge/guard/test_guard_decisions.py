"""EdgeGuard's decisions with a fake clock: floods, trust, capacity, failures, locks, connections."""

from __future__ import annotations

from helpline.sbc_bridge.guard import PASS, Ban, BanChange, EdgeGuard, Verdict
from tests.sbc_bridge.guard.guard_support import Events, FakeClock, make_guard, parse_request, request_bytes

AGENTS = ("127.0.0.1", 5070)
TRUNK_IP = "192.0.2.10"
ATTACKER = ("203.0.113.5", 5060)


def _screen(
    guard: EdgeGuard, method: str, addr: tuple[str, int], listener: str = "agents", **kw: object
) -> Verdict:
    request = parse_request(request_bytes(method, AGENTS, addr, **kw))  # type: ignore[arg-type]
    return guard.screen(listener, "udp", request, addr)  # type: ignore[arg-type]


def _trusting(guard: EdgeGuard) -> EdgeGuard:
    guard.trusted = lambda ip: ip == TRUNK_IP
    return guard


def test_a_flood_over_the_bucket_is_dropped_then_banned_with_bounded_events() -> None:
    clock, events = FakeClock(), Events()
    guard = make_guard(events, clock)
    verdicts = [_screen(guard, "OPTIONS", ATTACKER) for _ in range(20)]  # the burst
    assert verdicts == [PASS] * 20
    dropped = [_screen(guard, "OPTIONS", ATTACKER) for _ in range(49)]
    assert all(v.action == "drop" and not v.remembered for v in dropped)
    assert guard.bans.check(ATTACKER[0]) is None
    _screen(guard, "OPTIONS", ATTACKER)  # the 50th excess within 2 s
    ban = guard.bans.check(ATTACKER[0])
    assert ban is not None and ban.reason == "flood" and ban.kind == "source"
    assert len(events.of("security.rate_limited")) == 1  # one per source per second, not per packet
    assert ban.until is not None and (ban.until - ban.since).total_seconds() == 900
    assert events.of("security.banned") == [
        {
            "key": ATTACKER[0],
            "kind": "source",
            "reason": "flood",
            "until": ban.until.isoformat(),
            "source": ATTACKER[0],
        }
    ]
    # banned: the bytes are not even parsed, and that is reported once a minute at most
    assert not any(guard.admit_bytes("trunk", "udp", ATTACKER, 400) for _ in range(1000))
    assert len(events.of("security.banned_traffic")) == 1
    clock.advance(61)
    guard.admit_bytes("agents", "udp", ATTACKER, 400)
    assert events.of("security.banned_traffic")[-1]["dropped"] == 1001
    clock.advance(900)
    assert guard.admit_bytes("agents", "udp", ATTACKER, 400)  # the ban expired
    assert events.of("security.unbanned")[-1] == {
        "key": ATTACKER[0],
        "kind": "source",
        "reason": "flood",
        "by": "expiry",
    }


def test_a_slow_excess_is_dropped_but_not_banned() -> None:
    clock, events = FakeClock(), Events()
    guard = make_guard(events, clock, flood_ban_excess=5, flood_window_s=2.0)
    for _ in range(20):  # the OPTIONS burst
        _screen(guard, "OPTIONS", ATTACKER)
    drops = 0
    for _ in range(20):  # 11 a second against a rate of 10: one excess a second, never 5 within 2 s
        clock.advance(1.0)
        drops += sum(_screen(guard, "OPTIONS", ATTACKER).action == "drop" for _ in range(11))
    assert drops == 20
    assert guard.bans.check(ATTACKER[0]) is None and not events.of("security.banned")
    assert 1 <= len(events.of("security.rate_limited")) <= 20


def test_trusted_sources_are_never_limited_or_banned_and_get_503_over_capacity() -> None:
    clock, events = FakeClock(), Events()
    guard = _trusting(
        make_guard(
            events,
            clock,
            rates={
                "INVITE": {"per_source": 1, "burst": 1, "global": 3},
                "OPTIONS": {"per_source": 1, "burst": 1, "global": 1},
            },
        )
    )
    trunk = (TRUNK_IP, 5060)
    verdicts = [_screen(guard, "INVITE", trunk, listener="trunk") for _ in range(5)]
    assert verdicts[:3] == [PASS] * 3
    assert verdicts[3] == Verdict("reject", 503, "Service Unavailable", (("Retry-After", "5"),))
    assert all(_screen(guard, "OPTIONS", trunk, listener="trunk") == PASS for _ in range(100))
    assert all(_screen(guard, "BYE", trunk, listener="trunk") == PASS for _ in range(1000))
    for _ in range(50):
        guard.auth_failed("trunk", "udp", trunk, None, "wrong password")
    assert guard.bans.check(TRUNK_IP) is None and not events.of("security.banned")
    assert len(events.of("security.auth_failure")) == 50
    guard.restore([Ban(TRUNK_IP, "source", "flood", *_span(clock), "guard")])
    assert guard.admit_bytes("trunk", "udp", trunk, 100)
    # untrusted INVITEs use their own pool: the carriers' budget is untouched by a stranger flood
    clock.advance(10)
    for i in range(50):
        _screen(guard, "INVITE", (f"198.51.100.{i}", 5060), listener="trunk")
    assert _screen(guard, "INVITE", trunk, listener="trunk") == PASS


def _span(clock: FakeClock) -> tuple:  # type: ignore[type-arg]
    from datetime import UTC, datetime

    since = datetime.fromtimestamp(clock.wall_now, UTC)
    return since, datetime.fromtimestamp(clock.wall_now + 600, UTC)


def test_trusted_networks_are_exempt_from_source_limits_but_users_still_lock() -> None:
    events = Events()
    guard = make_guard(events, trusted_networks=["10.8.0.0/16"], ban_after_failures=2, lock_after_failures=3)
    office = ("10.8.1.1", 5060)
    assert all(_screen(guard, "REGISTER", office) == PASS for _ in range(500))
    for _ in range(3):
        guard.auth_failed("agents", "udp", office, "1001", "wrong password")
    assert guard.bans.check("10.8.1.1") is None
    assert guard.user_locked("1001")
    assert events.of("security.user_locked")[0]["user"] == "1001"


def test_auth_failures_ban_the_source_after_five_and_lock_the_user_after_twenty() -> None:
    clock, events = FakeClock(), Events()
    guard = make_guard(events, clock)
    changes: list[BanChange] = []
    guard.on_ban_change = changes.append
    for _ in range(4):
        guard.auth_failed("agents", "udp", ATTACKER, "1001", "wrong password")
    assert guard.bans.check(ATTACKER[0]) is None
    guard.auth_failed("agents", "tcp", ATTACKER, "1001", "wrong password")
    assert guard.bans.check(ATTACKER[0]) is not None
    assert events.of("security.auth_failure")[-1] == {
        "source": "203.0.113.5:5060",
        "listener": "agents",
        "transport": "tcp",
        "user": "1001",
        "reason": "wrong password",
    }
    assert [c.action for c in changes] == ["banned"]
    for i in range(15):  # 15 more for 1001 from 5 other sources: 3 each, none banned
        guard.auth_failed("agents", "udp", (f"198.51.100.{i % 5}", 5060), "1001", "wrong password")
    assert guard.user_locked("1001") and not guard.user_locked("1002")
    assert [c.action for c in changes] == ["banned", "banned"] and changes[-1].ban.kind == "user"
    lock = guard.bans.check("1001")
    assert lock is not None and lock.reason == "user_auth_failures"
    clock.advance(901)
    assert not guard.user_locked("1001")
    assert events.of("security.unbanned")[-1]["key"] == "1001"


def test_a_lift_starts_the_source_from_zero() -> None:
    guard = make_guard(ban_after_failures=3, lock_after_failures=20)
    for _ in range(3):
        guard.auth_failed("agents", "udp", ATTACKER, None, "wrong password")
    assert guard.bans.lift(ATTACKER[0], "admin") is not None
    guard.auth_failed("agents", "udp", ATTACKER, None, "wrong password")
    assert guard.bans.check(ATTACKER[0]) is None  # the three old failures do not count again


def test_caps_scanners_and_the_trunk_listener_never_answering_strangers() -> None:
    events = Events()
    guard = _trusting(make_guard(events))
    assert _screen(guard, "OPTIONS", ATTACKER, user_agent="friendly-scanner").action == "drop"
    assert events.of("security.scanner")[0]["signature"] == "friendly-scanner"
    pad = [(f"X-Pad-{i}", "x") for i in range(120)]
    assert _screen(guard, "OPTIONS", ATTACKER, extra=pad) == Verdict("reject", 513, "Message Too Large")
    assert _screen(guard, "OPTIONS", ATTACKER, extra=pad, listener="trunk").action == "drop"
    assert _screen(guard, "OPTIONS", (TRUNK_IP, 5060), extra=pad, listener="trunk").code == 513
    assert _screen(guard, "ACK", ATTACKER, extra=pad).action == "drop"
    assert events.of("security.oversize")[0]["cap"] == "headers"
    # size caps before parsing
    assert not guard.admit_bytes("agents", "udp", ATTACKER, 8193)
    assert guard.admit_bytes("agents", "udp", ATTACKER, 8192)
    assert guard.admit_bytes("agents", "tcp", ATTACKER, 60000)
    assert not guard.admit_bytes("agents", "tls", ATTACKER, 70000)


def test_garbage_counts_toward_a_flood_ban_and_is_reported_once_a_second() -> None:
    clock = FakeClock()
    guard = _trusting(make_guard(clock=clock, flood_ban_excess=10))
    reports = [guard.unparseable("agents", "udp", ATTACKER) for _ in range(9)]
    assert reports == [True] + [False] * 8
    guard.unparseable("agents", "udp", ATTACKER)
    assert guard.bans.check(ATTACKER[0]) is not None
    assert all(guard.unparseable("trunk", "udp", (TRUNK_IP, 5060)) for _ in range(100))
    assert guard.bans.check(TRUNK_IP) is None


def test_connections_without_a_valid_message_are_capped_per_source() -> None:
    events = Events()
    guard = _trusting(make_guard(events, tcp={"unauthenticated_per_source": 3}))
    addrs = [(ATTACKER[0], 40000 + i) for i in range(4)]
    assert [guard.admit_connection("agents", "tcp", a) for a in addrs] == [True, True, True, False]
    assert events.of("security.tcp_refused")[0]["source"] == "203.0.113.5:40003"
    guard.connection_validated("agents", addrs[0])
    assert guard.admit_connection("agents", "tcp", addrs[3])
    guard.connection_closed("agents", addrs[0], validated=True)  # already out of the count
    assert not guard.admit_connection("agents", "tcp", (ATTACKER[0], 41000))
    guard.connection_closed("agents", addrs[1], validated=False)
    assert guard.pending_connections(ATTACKER[0]) == 2
    assert all(guard.admit_connection("trunk", "tcp", (TRUNK_IP, 50000 + i)) for i in range(10))
    guard.bans.ban(ATTACKER[0], "source", "flood", 60)
    guard.connection_closed("agents", addrs[2], validated=False)
    assert not guard.admit_connection("agents", "tcp", (ATTACKER[0], 42000))


def test_a_disabled_guard_passes_everything() -> None:
    guard = make_guard(enabled=False)
    assert all(_screen(guard, "INVITE", ATTACKER, user_agent="friendly-scanner") == PASS for _ in range(500))
    assert guard.admit_bytes("agents", "udp", ATTACKER, 60000)
    for _ in range(50):
        guard.auth_failed("agents", "udp", ATTACKER, "1001", "wrong password")
    assert guard.bans.check(ATTACKER[0]) is None and not guard.user_locked("1001")
    assert all(guard.admit_connection("agents", "tcp", (ATTACKER[0], 40000 + i)) for i in range(100))


def test_a_ban_restored_before_the_trunks_were_known_never_blocks_a_trunk() -> None:
    clock, events = FakeClock(), Events()
    guard = make_guard(events, clock)
    trunk = (TRUNK_IP, 5060)
    guard.restore([Ban(TRUNK_IP, "source", "flood", *_span(clock), "guard")])
    assert not guard.admit_bytes("trunk", "udp", trunk, 100)  # not known as a trunk yet
    _trusting(guard)
    assert guard.admit_bytes("trunk", "udp", trunk, 100)
    assert guard.admit_connection("trunk", "tcp", trunk)
    assert guard.bans.check(TRUNK_IP) is None
    assert events.of("security.unbanned")[-1]["by"] == "trusted"
