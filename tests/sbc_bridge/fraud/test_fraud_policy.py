"""The toll-fraud policy as bookkeeping: destinations, per-agent rate and concurrency, transfers."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from helpline.sbc_bridge.guard.fraud import OutboundPolicy, OutboundSettings, target_number


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def policy(
    clock: Clock | None = None, blocked: tuple[str, ...] = ("+7", "+850"), **settings: object
) -> OutboundPolicy:
    return OutboundPolicy(OutboundSettings(**settings), blocked, clock=clock or Clock())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("number", "rule"),
    [
        ("+12125550100", None),  # domestic NANP: the default allowlist
        ("5551234", "not_e164"),  # what an agent dials must be E.164 by now
        ("+1555", "not_e164"),
        ("+447700900123", "not_allowed"),  # another country, not listed
        ("+79161234567", "blocked_country"),  # the edge's blocked countries apply outbound too
        ("+88112345678", "not_allowed"),  # satellite: not in "+1"
        ("+19005550100", "high_cost"),  # NANP premium rate looks domestic
        ("+18765550100", "high_cost"),  # Jamaica: an international call behind "+1"
        ("+12845550100", "high_cost"),  # British Virgin Islands
    ],
)
def test_default_destinations(number: str, rule: str | None) -> None:
    verdict = policy().check_destination(number)
    assert verdict.allowed is (rule is None)
    assert verdict.rule == rule
    if rule is not None:
        assert verdict.reason


def test_high_cost_range_needs_its_own_listing() -> None:
    broad = policy(allow_prefixes=("+1", "+8"))
    assert broad.check_destination("+88112345678").rule == "high_cost"  # "+8" does not open "+881"
    assert broad.check_destination("+861012345678").allowed  # China is inside "+8"
    listed = policy(allow_prefixes=("+1", "+881"))
    assert listed.check_destination("+88112345678").allowed
    jamaica = policy(allow_prefixes=("+1", "+1876"))
    assert jamaica.check_destination("+18765550100").allowed


def test_blocked_prefixes_win_over_the_allowlist() -> None:
    p = policy(allow_prefixes=("+1", "+44"), blocked_prefixes=("+4470",))
    assert p.check_destination("+447012345678").rule == "blocked_country"
    assert p.check_destination("+447700900123").allowed
    assert policy(allow_prefixes=("+7",)).check_destination("+79161234567").rule == "blocked_country"


def test_agent_rate_is_per_agent_and_slides() -> None:
    clock = Clock()
    p = policy(clock, agent_calls_per_minute=3, agent_concurrent=10)
    for _ in range(3):
        assert p.check_agent_call("1001", "+12125550100").allowed
    refused = p.check_agent_call("1001", "+12125550100")
    assert (refused.allowed, refused.rule) == (False, "rate")
    assert p.check_agent_call("1002", "+12125550100").allowed  # another agent has its own budget
    clock.now += 59.0
    assert p.check_agent_call("1001", "+12125550100").rule == "rate"
    clock.now += 1.0  # the first three attempts are a minute old now
    assert p.check_agent_call("1001", "+12125550100").allowed


def test_refused_destinations_do_not_use_the_rate_budget() -> None:
    p = policy(agent_calls_per_minute=1)
    for _ in range(5):
        assert p.check_agent_call("1001", "+88112345678").rule == "not_allowed"
    assert p.check_agent_call("1001", "+12125550100").allowed


def test_agent_concurrency() -> None:
    p = policy(agent_calls_per_minute=100, agent_concurrent=2)
    for _ in range(2):
        assert p.check_agent_call("1001", "+12125550100").allowed
        p.call_started("1001")
    assert p.check_agent_call("1001", "+12125550100").rule == "concurrency"
    assert p.active_calls("1001") == 2
    p.call_ended("1001")
    assert p.check_agent_call("1001", "+12125550100").allowed
    p.call_ended("1001")
    p.call_ended("1001")  # one end too many never goes below zero
    assert p.active_calls("1001") == 0


def test_zero_limits_refuse_every_agent_call() -> None:
    p = policy(agent_calls_per_minute=0)
    assert p.check_agent_call("1001", "+12125550100").rule == "rate"
    assert policy(agent_concurrent=0).check_agent_call("1001", "+12125550100").rule == "concurrency"


@pytest.mark.parametrize(
    ("target", "number"),
    [
        ("sip:queue-billing@127.0.0.1:5070", None),
        ("sip:alice@pbx.example.com", None),
        ("<sip:queue-billing@127.0.0.1>", None),
        ("sip:+15551238888@127.0.0.1:5070", "+15551238888"),
        ("<sip:+1 (555) 123-8888@carrier;user=phone>", "+15551238888"),
        ("sip:%2B88112345678@carrier", "+88112345678"),
        ("sip:+88112345678:secret@carrier", "+88112345678"),
        ("sip:5551238888@carrier", "5551238888"),
        ("sip:1001@carrier", "1001"),
        ("sips:911@carrier", "911"),
        ("sip:+15551238888", "+15551238888"),
        ("sip:127.0.0.1:5710", None),  # a host, no user
        ("sip:10.1.2.3", None),
        ("tel:+15551238888;phone-context=x", "+15551238888"),
        ("TEL:+44-20-7946-0000", "+442079460000"),
        ("+15551239999", "+15551239999"),
        ("0044 20 7946 0000", "00442079460000"),
    ],
)
def test_target_number(target: str, number: str | None) -> None:
    assert target_number(target) == number


def test_transfers_to_numbers_are_off_by_default() -> None:
    p = policy()
    assert p.allow_transfer("sip:queue-billing@127.0.0.1:5070").allowed
    refused = p.allow_transfer("sip:+15551238888@127.0.0.1:5070")
    assert (refused.allowed, refused.rule, refused.number) == (False, "number_transfer", "+15551238888")
    assert p.allow_transfer("+15551239999").rule == "number_transfer"


def test_transfers_to_numbers_follow_the_allowlist_when_enabled() -> None:
    p = policy(refer_to_numbers=True)
    assert p.allow_transfer("sip:+15551238888@carrier").allowed
    assert p.allow_transfer("tel:+88212345678").rule == "not_allowed"
    assert p.allow_transfer("sip:+19005550100@carrier").rule == "high_cost"
    assert p.allow_transfer("sip:+79161234567@carrier").rule == "blocked_country"
    assert p.allow_transfer("sip:1001@carrier").rule == "not_e164"


@pytest.mark.parametrize(
    "settings",
    [
        {"allow_prefixes": ("1",)},
        {"allow_prefixes": ("+01",)},
        {"blocked_prefixes": ("+44x",)},
        {"agent_calls_per_minute": -1},
        {"agent_concurrent": -1},
        {"unknown": 1},
    ],
)
def test_settings_refuse_bad_values(settings: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        OutboundSettings(**settings)  # type: ignore[arg-type]


def test_settings_are_frozen() -> None:
    settings = OutboundSettings()
    assert settings.allow_prefixes == ("+1",) and not settings.refer_to_numbers
    with pytest.raises(ValidationError):
        settings.refer_to_numbers = True  # type: ignore[misc]


def test_agent_dial_reads_the_request_uri() -> None:
    p = policy()
    assert p.check_agent_dial("1001", "sip:queue-billing@127.0.0.1:5070") is None  # no number: no toll
    verdict = p.check_agent_dial("1001", "sip:+88112345678@127.0.0.1:5070;user=phone")
    assert verdict is not None and (verdict.rule, verdict.number) == ("not_allowed", "+88112345678")
    national = p.check_agent_dial("1001", "sip:2125550100@127.0.0.1")
    assert national is not None and (national.rule, national.number) == ("not_e164", "2125550100")
    allowed = p.check_agent_dial("1001", "sip:+12125550100@127.0.0.1")
    assert allowed is not None and allowed.allowed
