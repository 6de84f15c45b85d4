"""Recording policy resolution (R-C3): the strictest party's rule wins, unknown counts as consent,
a DID or flow rule ``none`` records nothing; and the ``[recording]``/``[retention]`` settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from helpline.config import ConfigError, load_settings
from helpline.recording.policy import (
    RecordingSettings,
    RetentionPolicySettings,
    jurisdiction_of,
    resolve_policy,
)

CA_CALLER = "+14155552671"  # San Francisco, CA
SACRAMENTO = "+19165550100"  # geocoded as "California"
TX_CALLER = "+12145550100"  # geocoded as "Texas"
NY_CALLER = "+12125551234"  # New York, NY
DE_CALLER = "+13025550123"  # Delaware
GERMAN_CALLER = "+4930123456"
TOLL_FREE = "+18005550100"
SUPPORT_DID = "+18005550199"


def settings(**overrides: object) -> RecordingSettings:
    base: dict[str, object] = {"enabled": True, "mode": "notify", "site": "US-TX"}
    return RecordingSettings.model_validate({**base, **overrides})


@pytest.mark.parametrize(
    ("caller", "overrides", "mode", "rule"),
    [
        (CA_CALLER, {}, "consent", "caller:US-CA"),
        (SACRAMENTO, {}, "consent", "caller:US-CA"),
        (TX_CALLER, {}, "notify", "default"),
        (NY_CALLER, {}, "notify", "default"),
        (TOLL_FREE, {}, "consent", "caller:unknown:US"),
        ("anonymous", {}, "consent", "caller:unknown"),
        ("+15550100001", {}, "consent", "caller:unknown"),
        (DE_CALLER, {}, "consent", "caller:US-DE"),
        (GERMAN_CALLER, {}, "consent", "caller:unknown:DE"),
        (GERMAN_CALLER, {"jurisdictions": {"DE": "notify"}}, "notify", "default"),
        # the agents' site counts as a party: a TX caller reaching agents in California needs consent
        (TX_CALLER, {"site": "US-CA"}, "consent", "site:US-CA"),
        # a site the map splits by state but whose state is not given is unknown
        (TX_CALLER, {"site": "US"}, "consent", "site:unknown:US"),
        # the DID's own rule is the strictest here
        (TX_CALLER, {"dids": {SUPPORT_DID: {"mode": "consent"}}}, "consent", f"did:{SUPPORT_DID}"),
    ],
)
def test_strictest_party_wins(caller: str, overrides: dict[str, object], mode: str, rule: str) -> None:
    resolved = resolve_policy(settings(**overrides), caller=caller, did=SUPPORT_DID, flow_id="support")
    assert (resolved.mode, resolved.rule) == (mode, rule)
    assert resolved.record is True
    assert resolved.allow_continue is (mode == "notify")


def test_ca_caller_with_tx_site_records_the_jurisdiction_inputs() -> None:
    resolved = resolve_policy(settings(), caller=CA_CALLER, did=SUPPORT_DID, flow_id="support")
    inputs = resolved.inputs
    assert (inputs.caller_country, inputs.caller_region, inputs.site) == ("US", "US-CA", "US-TX")
    assert (inputs.did, inputs.flow_id) == (SUPPORT_DID, "support")
    assert [(p.party, p.rule, p.mode) for p in resolved.parties] == [
        ("policy", "default", "notify"),
        ("caller", "US-CA", "consent"),
        ("site", "US", "notify"),  # Texas is not listed: the country's rule applies
    ]
    evidence = resolved.as_dict()
    assert evidence["inputs"]["caller_region"] == "US-CA" and evidence["mode"] == "consent"


def test_did_none_records_nothing_whatever_the_caller() -> None:
    s = settings(dids={SUPPORT_DID: {"mode": "none"}})
    resolved = resolve_policy(s, caller=CA_CALLER, did=SUPPORT_DID, flow_id="support")
    assert (resolved.mode, resolved.record, resolved.rule) == ("none", False, f"did:{SUPPORT_DID}")
    assert resolved.consent_policy().mode == "none"
    # another DID is unaffected
    other = resolve_policy(s, caller=CA_CALLER, did="+18005550100", flow_id="support")
    assert (other.mode, other.record) == ("consent", True)


def test_per_flow_override() -> None:
    s = settings(flows={"sales": {"mode": "consent"}, "internal": {"mode": "none"}})
    sales = resolve_policy(s, caller=TX_CALLER, did=SUPPORT_DID, flow_id="sales")
    assert (sales.mode, sales.rule, sales.policy_id) == ("consent", "flow:sales", "flow:sales")
    internal = resolve_policy(s, caller=TX_CALLER, did=SUPPORT_DID, flow_id="internal")
    assert (internal.mode, internal.record) == ("none", False)
    plain = resolve_policy(s, caller=TX_CALLER, did=SUPPORT_DID, flow_id="support")
    assert (plain.mode, plain.policy_id) == ("notify", "default")


def test_did_and_flow_rules_combine_strictest_and_none_wins() -> None:
    both = settings(dids={SUPPORT_DID: {"mode": "notify"}}, flows={"sales": {"mode": "consent"}})
    resolved = resolve_policy(both, caller=TX_CALLER, did=SUPPORT_DID, flow_id="sales")
    assert (resolved.mode, resolved.rule) == ("consent", "flow:sales")
    assert resolved.policy_id == f"did:{SUPPORT_DID}+flow:sales"
    dnr = settings(dids={SUPPORT_DID: {"mode": "consent"}}, flows={"sales": {"mode": "none"}})
    assert resolve_policy(dnr, caller=TX_CALLER, did=SUPPORT_DID, flow_id="sales").record is False


def test_disabled_recording_resolves_to_none() -> None:
    resolved = resolve_policy(RecordingSettings(enabled=False), caller=CA_CALLER, did=SUPPORT_DID,
                              flow_id="support")
    assert (resolved.mode, resolved.record, resolved.rule) == ("none", False, "disabled")


def test_policy_version_follows_the_deciding_settings_only() -> None:
    def version(s: RecordingSettings, caller: str = CA_CALLER) -> str:
        return resolve_policy(s, caller=caller, did=SUPPORT_DID, flow_id="support").policy_version

    base = version(settings())
    assert base == version(settings())
    assert len(base) == 12
    assert version(settings(segment_seconds=2.0)) == base  # does not decide anything
    assert version(settings(jurisdictions={"US-CA": "notify"})) != base
    assert version(settings(decline_action="agent_only")) != base
    assert version(settings(), caller=TX_CALLER) != base


def test_user_jurisdictions_overlay_the_shipped_map() -> None:
    s = settings(jurisdictions={"GB": "notify"})
    assert s.jurisdictions["GB"] == "notify"
    assert s.jurisdictions["US"] == "notify" and s.jurisdictions["US-CA"] == "consent"
    assert resolve_policy(s, caller="+442079460000", did=SUPPORT_DID, flow_id="x").mode == "notify"


def test_nanp_state_comes_from_the_geocoder() -> None:
    assert jurisdiction_of(CA_CALLER).region == "US-CA"
    assert jurisdiction_of("+12065550100").region == "US-WA"  # "Washington State"
    assert jurisdiction_of(TOLL_FREE).region is None
    assert jurisdiction_of("+14165550123").country == "CA"  # Toronto: Canada, not California
    assert jurisdiction_of("+14165550123").region is None


def test_bad_settings_name_the_field() -> None:
    with pytest.raises(ValidationError, match="floor_days"):
        RetentionPolicySettings(days=30, floor_days=31, purpose="x", lawful_basis="y")
    with pytest.raises(ValidationError, match="jurisdiction"):
        RecordingSettings.model_validate({"jurisdictions": {"california": "consent"}})
    with pytest.raises(ValidationError, match=r"E\.164"):
        RecordingSettings.model_validate({"dids": {"18005550100": {"mode": "none"}}})
    with pytest.raises(ValidationError, match="mode"):
        RecordingSettings.model_validate({"mode": "sometimes"})


def test_config_file_sections(tmp_path: Path) -> None:
    path = tmp_path / "helpline.toml"
    path.write_text("""\
[recording]
enabled = true
mode = "consent"
site = "US-TX"
retention_policy = "mifid"
[recording.dids."+18005550100"]
mode = "notify"
[recording.jurisdictions]
"US" = "notify"
"US-CA" = "consent"
[retention.policies.mifid]
days = 2555
floor_days = 1825
purpose = "MiFID II order records"
lawful_basis = "legal obligation"
""")
    loaded = load_settings(path)
    assert loaded.recording.dids["+18005550100"].mode == "notify"
    assert loaded.retention.policies["mifid"].floor_days == 1825
    defaults = load_settings()
    assert defaults.recording.enabled is True  # on by default; a flow still has to ask for consent and start
    default_policy = defaults.retention.policies["default"]
    assert (default_policy.days, default_policy.floor_days) == (365, 30)

    path.write_text('[recording]\nretention_policy = "gone"\n')
    with pytest.raises(ConfigError, match="retention_policy 'gone'"):
        load_settings(path)
    path.write_text("[retention.policies.default]\ndays = 10\nfloor_days = 20\n"
                    "purpose = 'x'\nlawful_basis = 'y'\n")
    with pytest.raises(ConfigError, match=r"retention\.policies\.default.*floor_days"):
        load_settings(path)
