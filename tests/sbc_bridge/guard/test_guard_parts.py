"""The guard's parts on their own: buckets, windows, the ban table, caps, connection counts."""

from __future__ import annotations

from aiosipua.message import SipRequest

from helpline.sbc_bridge.guard import Ban, BanChange, BanTable, SecuritySettings
from helpline.sbc_bridge.guard.auth_failures import AuthFailures
from helpline.sbc_bridge.guard.buckets import RateLimiter, TokenBucket
from helpline.sbc_bridge.guard.screen import request_excess, scanner_match
from helpline.sbc_bridge.guard.settings import CapSettings, RateSettings
from helpline.sbc_bridge.guard.tcp_limits import PendingConnections
from helpline.sbc_bridge.guard.windows import EventGate, LruDict, ThresholdWindow
from tests.sbc_bridge.guard.guard_support import FakeClock, parse_request, request_bytes

TARGET = ("127.0.0.1", 5070)
LOCAL = ("127.0.0.9", 40000)


def test_token_bucket_gives_the_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert [bucket.take(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.take(0.05) is False  # half a token
    assert bucket.take(0.1) is True
    assert bucket.take(100.0) and bucket.tokens == 4  # refills to the burst, not beyond


def test_rate_limiter_keys_sources_and_method_classes_in_a_bounded_lru() -> None:
    rates = RateSettings.model_validate(
        {
            "INVITE": {"per_source": 1, "burst": 2, "global": 1000},
            "other": {"per_source": 1, "burst": 3, "global": 1000},
        }
    )
    limiter = RateLimiter(rates, capacity=16, now=0.0)
    assert [limiter.allow_source("10.0.0.1", "INVITE", 0.0) for _ in range(3)] == [True, True, False]
    # BYE and ACK share the "other" bucket, which is separate from INVITE's
    assert limiter.allow_source("10.0.0.1", "BYE", 0.0) and limiter.allow_source("10.0.0.1", "ACK", 0.0)
    assert limiter.allow_source("10.0.0.2", "INVITE", 0.0)
    for i in range(100):
        limiter.allow_source(f"10.1.0.{i}", "INVITE", 0.0)
    assert limiter.tracked_sources() == 16
    # 10.0.0.1 was forgotten by the LRU: it comes back with a full bucket
    assert limiter.allow_source("10.0.0.1", "INVITE", 0.0)


def test_global_pools_for_trusted_and_untrusted_are_separate() -> None:
    rates = RateSettings.model_validate({"INVITE": {"per_source": 100, "burst": 100, "global": 3}})
    limiter = RateLimiter(rates, capacity=16, now=0.0)
    assert [limiter.allow_global("untrusted", "INVITE", 0.0) for _ in range(4)] == [True] * 3 + [False]
    assert limiter.allow_global("trusted", "INVITE", 0.0)
    assert limiter.allow_global("untrusted", "INVITE", 1.0)  # refilled


def test_lru_dict_forgets_the_least_recently_used() -> None:
    lru: LruDict[str, int] = LruDict(2)
    lru.setdefault("a", lambda: 1)
    lru.setdefault("b", lambda: 2)
    assert lru.get("a") == 1  # a is now the most recent
    lru.setdefault("c", lambda: 3)
    assert "b" not in lru and "a" in lru and "c" in lru and len(lru) == 2


def test_threshold_window_counts_only_hits_inside_the_window() -> None:
    window = ThresholdWindow(threshold=3, window_s=10.0, capacity=16)
    assert not window.hit("x", 0.0) and not window.hit("x", 5.0)
    assert not window.hit("x", 11.0)  # the first hit left the window
    assert window.hit("x", 14.0)  # 5, 11, 14
    assert window.count("x", 14.0) == 3 and window.count("x", 100.0) == 0
    window.forget("x")
    assert not window.hit("x", 15.0)


def test_event_gate_lets_one_through_per_interval_and_counts_the_rest() -> None:
    gate = EventGate(interval_s=1.0, capacity=16)
    assert gate.due("k", 0.0) == 0
    assert [gate.due("k", 0.1 * i) for i in range(1, 10)] == [None] * 9
    assert gate.due("k", 1.0) == 9
    assert gate.due("other", 1.0) == 0


def test_auth_failures_ban_sources_and_lock_users_on_their_thresholds() -> None:
    failures = AuthFailures(
        SecuritySettings(ban_after_failures=3, lock_after_failures=4, failure_window_s=60)
    )
    assert [failures.record("10.0.0.1", "1001", t).ban_source for t in (0, 1, 2)] == [False, False, True]
    assert failures.record("10.0.0.2", "1001", 3).lock_user  # 4 for 1001 from anywhere
    assert not failures.record(None, "1002", 4).ban_source  # a trusted source is never counted
    assert not failures.record("10.0.0.3", None, 5).lock_user


def test_ban_table_expires_on_read_and_by_sweep_and_reports_every_change() -> None:
    clock = FakeClock()
    changes: list[BanChange] = []
    table = BanTable(16, wall=clock.wall, on_change=changes.append)
    ban = table.ban("10.0.0.1", "source", "flood", 60)
    table.ban("1001", "user", "user_auth_failures", 120)
    assert ban.until is not None and (ban.until - ban.since).total_seconds() == 60
    assert table.check("10.0.0.1") == ban and len(table) == 2
    clock.advance(61)
    assert table.check("10.0.0.1") is None  # expired on read
    assert [c.action for c in changes] == ["banned", "banned", "expired"]
    assert table.check("1001") is not None
    clock.advance(60)
    assert table.sweep() == 1 and len(table) == 0
    assert changes[-1].action == "expired" and changes[-1].ban.key == "1001" and changes[-1].by == "expiry"


def test_ban_table_lift_renew_and_permanent_bans() -> None:
    clock = FakeClock()
    changes: list[BanChange] = []
    table = BanTable(16, wall=clock.wall, on_change=changes.append)
    table.ban("10.0.0.1", "source", "flood", 10)
    renewed = table.ban("10.0.0.1", "source", "auth_failures", 100)
    clock.advance(50)
    assert table.sweep() == 0 and table.check("10.0.0.1") == renewed  # the old end is not the ban's end
    assert table.lift("10.0.0.1", "admin") == renewed
    assert changes[-1] == BanChange("lifted", renewed, "admin")
    assert table.lift("10.0.0.1", "admin") is None
    forever = table.ban("10.0.0.2", "source", "manual", None, by="admin")
    clock.advance(10**8)
    assert forever.until is None and table.check("10.0.0.2") == forever and table.list() == [forever]


def test_ban_table_is_bounded_and_restores_only_live_bans() -> None:
    clock = FakeClock()
    changes: list[BanChange] = []
    table = BanTable(16, wall=clock.wall, on_change=changes.append)
    for i in range(20):
        table.ban(f"10.0.0.{i}", "source", "flood", 60)
    assert len(table) == 16
    assert table.check("10.0.0.0") is None and table.check("10.0.0.19") is not None
    assert [c.ban.key for c in changes if c.action == "expired"] == [f"10.0.0.{i}" for i in range(4)]
    fresh = BanTable(16, wall=clock.wall, on_change=changes.append)
    before = len(changes)
    live = table.check("10.0.0.19")
    assert live is not None
    dead = Ban("10.9.9.9", "source", "flood", live.since, live.since, "guard")
    assert fresh.restore([live, dead]) == 1
    assert fresh.check("10.0.0.19") == live and fresh.check("10.9.9.9") is None
    assert len(changes) == before  # restoring reports nothing


def _options(*extra: tuple[str, str], body: bytes = b"", vias: int = 0) -> SipRequest:
    request = parse_request(request_bytes("OPTIONS", TARGET, LOCAL, extra=list(extra), body=body))
    for i in range(vias):
        request.headers.append("Via", f"SIP/2.0/UDP 10.0.0.{i}:5060;branch=z9hG4bK{i}")
    return request


def test_request_caps_name_what_was_exceeded() -> None:
    caps = CapSettings()
    assert request_excess(_options(), caps) is None
    many = _options(*[(f"X-Pad-{i}", "x") for i in range(100)])
    excess = request_excess(many, caps)
    assert excess is not None and excess.what == "headers" and excess.code == 513
    long = request_excess(_options(("X-Long", "a" * 5000)), caps)
    assert long is not None and long.what == "header_bytes"
    vias = request_excess(_options(vias=75), caps)
    assert vias is not None and (vias.what, vias.size, vias.limit) == ("via_headers", 76, 70)
    sdp = b"v=0\r\n" + b"".join(b"m=audio %d RTP/AVP 0\r\n" % (4000 + 2 * i) for i in range(9))
    media = request_excess(_options(body=sdp), caps)
    assert media is not None and media.what == "sdp_media_lines" and media.code == 488
    assert request_excess(_options(body=sdp.replace(b"m=audio 4016 RTP/AVP 0\r\n", b"")), caps) is None


def test_scanner_user_agents_match_anywhere_case_insensitively() -> None:
    needles = SecuritySettings().scanner_needles
    assert scanner_match("friendly-scanner", needles) == "friendly-scanner"
    assert scanner_match("SIPVicious 0.3.4", needles) == "sipvicious"
    assert scanner_match("Mozilla sipcli/v1.8", needles) == "sipcli"
    assert scanner_match("Zoiper rv2.10", needles) is None
    assert scanner_match(None, needles) is None


def test_pending_connections_cap_limited_sources_only() -> None:
    pending = PendingConnections(per_source=2)
    assert pending.admit("a", limited=True) and pending.admit("a", limited=True)
    assert not pending.admit("a", limited=True)
    assert pending.admit("trunk", limited=False) and pending.admit("trunk", limited=False)
    assert pending.admit("trunk", limited=False)
    pending.settle("a")
    assert pending.pending("a") == 1 and pending.admit("a", limited=True)
    for _ in range(5):
        pending.settle("a")
    assert pending.pending("a") == 0 and len(pending) == 1  # only "trunk" is left


def test_settings_parse_the_documented_toml_shape() -> None:
    settings = SecuritySettings.model_validate(
        {
            "rates": {"INVITE": {"per_source": 5, "burst": 10, "global": 100}},
            "caps": {"headers": 50},
            "tcp": {"first_message_timeout_s": 3},
            "outbound": {"allow_prefixes": ["+1", "+44"]},
            "trusted_networks": ["192.0.2.0/24"],
        }
    )
    assert settings.rates.for_class("INVITE").global_rate == 100
    assert settings.rates.for_class("SUBSCRIBE").per_source == 50  # "other"
    assert settings.caps.headers == 50 and settings.tcp.first_message_timeout_s == 3
    assert settings.outbound.allow_prefixes == ("+1", "+44")
    for bad in (
        {"trusted_networks": ["office"]},
        {"drop_user_agents": [""]},
        {"lock_after_failures": 2},
        {"x": 1},
    ):
        try:
            SecuritySettings.model_validate(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad}")
