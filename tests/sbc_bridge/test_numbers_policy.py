"""Pure parts of the edge: E.164 normalisation, the call policy, INFO DTMF bodies, settings."""

from __future__ import annotations

import pydantic
import pytest

from helpline.sbc_bridge import EdgePolicy, SipSettings, decide_call, match_trunk, to_e164
from helpline.sbc_bridge.dtmf import parse_dtmf_info
from tests.sbc_bridge.edge_support import trunk

US = {"country_code": "1", "national_prefix": "1", "international_prefix": "011"}
DE = {"country_code": "49", "national_prefix": "0", "international_prefix": "00"}


@pytest.mark.parametrize(
    ("raw", "plan", "expected"),
    [
        ("+12125550100", US, "+12125550100"),
        ("12125550100", US, "+12125550100"),
        ("2125550100", US, "+12125550100"),
        ("(212) 555-0100", US, "+12125550100"),
        ("011442071234567", US, "+442071234567"),
        ("+4930123456;npdi", DE, "+4930123456"),
        ("004930123456", DE, "+4930123456"),
        ("030123456", DE, "+4930123456"),
        ("4930123456789", DE, "+4930123456789"),
        ("anonymous", US, None),
        ("", US, None),
        ("+0123456", US, None),
        ("12*34", US, None),
    ],
)
def test_to_e164(raw: str, plan: dict[str, str], expected: str | None) -> None:
    assert to_e164(raw, **plan) == expected


def test_policy_order_blocked_country_before_did_lookup() -> None:
    carrier = trunk()
    policy = EdgePolicy(blocked_countries=("+850",))
    refused = decide_call(carrier, "+850212345678", "+19999999999", policy)
    assert (refused.accepted, refused.sip_code, refused.security_type) == (
        False,
        403,
        "security.blocked_country",
    )
    blocked_did = decide_call(carrier, "+12125550100", "+8502123456", policy)
    assert blocked_did.sip_code == 403 and "DID" in blocked_did.reason
    unknown = decide_call(carrier, "+12125550100", "+19999999999", policy)
    assert (unknown.sip_code, unknown.security_type) == (404, "security.unknown_did")
    ok = decide_call(carrier, None, "+12125550199", policy)
    assert ok.accepted and ok.flow_id == "main-flow"


def test_match_trunk_by_cidr_and_address() -> None:
    a = trunk(name="a", sources=("192.0.2.0/24",))
    b = trunk(name="b", sources=("198.51.100.7", "2001:db8::/32"))
    assert match_trunk("192.0.2.99", [a, b]) is a
    assert match_trunk("198.51.100.7", [a, b]) is b
    assert match_trunk("2001:db8::1", [a, b]) is b
    assert match_trunk("203.0.113.1", [a, b]) is None
    assert match_trunk("not-an-ip", [a, b]) is None


@pytest.mark.parametrize(
    ("ctype", "body", "expected"),
    [
        ("application/dtmf-relay", "Signal=5\r\nDuration=160\r\n", ("5", 160)),
        ("application/dtmf-relay", "Duration=250\nSignal=11\n", ("#", 250)),
        ("application/dtmf-relay", "Signal=x\r\n", None),
        ("application/dtmf", "*", ("*", 100)),
        ("text/plain", "5", None),
    ],
)
def test_parse_dtmf_info(ctype: str, body: str, expected: tuple[str, int] | None) -> None:
    assert parse_dtmf_info(ctype, body) == expected


def test_settings_refuse_bad_values_naming_the_field() -> None:
    with pytest.raises(pydantic.ValidationError, match="min_se"):
        SipSettings(min_se=2)
    with pytest.raises(pydantic.ValidationError, match="sources"):
        trunk(sources=("not-a-net",))
    with pytest.raises(pydantic.ValidationError, match=r"E\.164"):
        trunk(dids={"2125550199": "flow"})
    with pytest.raises(pydantic.ValidationError, match="blocked country"):
        EdgePolicy(blocked_countries=("7",))
    assert SipSettings().user_agent is None
