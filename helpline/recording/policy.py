"""Which recording rule applies to a call: the ``[recording]`` and ``[retention]`` settings and the
strictest-party resolution (R-C3).

Resolution is pure: the same settings, caller, DID and flow always give the same :class:`ResolvedPolicy`,
and its ``policy_version`` (a hash of the settings that decided it) lets consent evidence name exactly
which rule a caller was asked under.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import phonenumbers
from phonenumbers import geocoder
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from helpline.ivr.channel import ConsentPolicy, DeclineAction, RecordingMode

Mode = RecordingMode
#: Strictness order: the larger rank wins when parties' rules differ.
STRICTNESS: dict[Mode, int] = {"none": 0, "notify": 1, "consent": 2}
#: What an unknown jurisdiction (no number, no region where the map needs one) counts as.
UNKNOWN: Mode = "consent"

#: US states commonly listed as all-party consent (CA, FL, IL, MD, MA, MT, NH, PA, WA), plus those
#: whose law is nuanced enough to treat the same way (CT, DE, MI, NV, OR).
ALL_PARTY_US_STATES = ("CA", "FL", "IL", "MD", "MA", "MT", "NH", "PA", "WA", "CT", "DE", "MI", "NV", "OR")
DEFAULT_JURISDICTIONS: dict[str, Mode] = {
    "US": "notify",
    **{f"US-{state}": "consent" for state in ALL_PARTY_US_STATES},
}

#: phonenumbers' geocoder names a NANP number's place as "City, ST" or as the state's full name.
US_STATE_NAMES: dict[str, str] = {
    "alabama": "AL", "alaska": "AK", "arizona": "AZ", "arkansas": "AR", "california": "CA",
    "colorado": "CO", "connecticut": "CT", "delaware": "DE", "district of columbia": "DC",
    "washington d.c.": "DC", "washington dc": "DC", "florida": "FL", "georgia": "GA", "hawaii": "HI",
    "idaho": "ID", "illinois": "IL", "indiana": "IN", "iowa": "IA", "kansas": "KS", "kentucky": "KY",
    "louisiana": "LA", "maine": "ME", "maryland": "MD", "massachusetts": "MA", "michigan": "MI",
    "minnesota": "MN", "mississippi": "MS", "missouri": "MO", "montana": "MT", "nebraska": "NE",
    "nevada": "NV", "new hampshire": "NH", "new jersey": "NJ", "new mexico": "NM", "new york": "NY",
    "north carolina": "NC", "north dakota": "ND", "ohio": "OH", "oklahoma": "OK", "oregon": "OR",
    "pennsylvania": "PA", "rhode island": "RI", "south carolina": "SC", "south dakota": "SD",
    "tennessee": "TN", "texas": "TX", "utah": "UT", "vermont": "VT", "virginia": "VA",
    "washington": "WA", "washington state": "WA", "west virginia": "WV", "wisconsin": "WI",
    "wyoming": "WY",
}
_STATE_SUFFIX = re.compile(r",\s*([A-Z]{2})$")
JURISDICTION = r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DidPolicy(_Section):
    """The recording rule for one DID or one flow; ``none`` means the call is never recorded.
    ``include_ivr`` (when set) decides for these calls whether the IVR part is recorded too."""

    mode: Mode
    include_ivr: bool | None = None


class RecordingSettings(_Section):
    """``[recording]``: whether, when and under which rule calls are recorded.

    ``mode`` is the rule for calls that no ``dids``/``flows`` entry names. ``site`` is where agents
    sit (``US-TX``): its rule counts as a party's. ``jurisdictions`` overlays the shipped map (US =
    notify, the all-party states = consent); a region not in it counts as ``consent``.
    """

    enabled: bool = True
    mode: Mode = "consent"
    include_ivr: bool = False
    decline_action: DeclineAction = "none"
    withdraw_sequence: str = Field(default="*7", pattern=r"^[0-9*#]{0,8}$")
    site: str | None = Field(default=None, pattern=JURISDICTION)
    encrypt: bool = False
    segment_seconds: float = Field(default=1.0, gt=0, le=60)
    storage_dir: Path | None = None  # default <data_dir>/recordings
    sweep_interval_s: float = Field(default=3600.0, gt=0)
    retention_policy: str = "default"
    dids: dict[str, DidPolicy] = Field(default_factory=dict)
    flows: dict[str, DidPolicy] = Field(default_factory=dict)
    jurisdictions: dict[str, Mode] = Field(default_factory=lambda: dict(DEFAULT_JURISDICTIONS))

    @field_validator("jurisdictions", mode="before")
    @classmethod
    def _overlay_defaults(cls, value: Any) -> Any:
        # removing a shipped entry would only make it unknown, i.e. consent: saying so is the same
        return {**DEFAULT_JURISDICTIONS, **value} if isinstance(value, dict) else value

    @field_validator("jurisdictions")
    @classmethod
    def _jurisdiction_keys(cls, value: dict[str, Mode]) -> dict[str, Mode]:
        bad = sorted(key for key in value if not re.match(JURISDICTION, key))
        if bad:
            raise ValueError(f"jurisdiction(s) {', '.join(map(repr, bad))} must look like 'US' or 'US-CA'")
        return value

    @field_validator("dids")
    @classmethod
    def _e164_dids(cls, value: dict[str, DidPolicy]) -> dict[str, DidPolicy]:
        bad = sorted(did for did in value if not re.match(r"^\+[1-9][0-9]{5,14}$", did))
        if bad:
            raise ValueError(f"DID(s) {', '.join(map(repr, bad))} must be E.164 numbers (+15551234567)")
        return value


class RetentionPolicySettings(_Section):
    """``[retention.policies.NAME]``: how long recordings are kept, and the shortest allowed."""

    days: int = Field(ge=1)
    floor_days: int = Field(default=0, ge=0)
    purpose: str = Field(min_length=1)
    lawful_basis: str = Field(min_length=1)

    @model_validator(mode="after")
    def _floor(self) -> RetentionPolicySettings:
        if self.floor_days > self.days:
            raise ValueError(f"floor_days ({self.floor_days}) is longer than days ({self.days})")
        return self


def _default_retention() -> dict[str, RetentionPolicySettings]:
    return {"default": RetentionPolicySettings(days=365, floor_days=30, purpose="quality and compliance",
                                               lawful_basis="legitimate interest")}


class RetentionSettings(_Section):
    """``[retention]``: named retention policies; recordings name one (``recording.retention_policy``)."""

    policies: dict[str, RetentionPolicySettings] = Field(default_factory=_default_retention)


@dataclass(frozen=True, slots=True)
class Jurisdiction:
    """Where a number belongs: ISO country and, for NANP numbers, ``US-CA`` style region."""

    country: str | None
    region: str | None


@dataclass(frozen=True, slots=True)
class Party:
    """One party's rule: who (``policy``, ``caller``, ``site``), under which map key, and the mode."""

    party: str
    rule: str
    mode: Mode


@dataclass(frozen=True, slots=True)
class PolicyInputs:
    """What the resolution looked at, kept with the consent evidence."""

    caller: str
    caller_country: str | None
    caller_region: str | None
    did: str
    flow_id: str
    site: str | None


@dataclass(frozen=True, slots=True)
class ResolvedPolicy:
    """The rule for one call. ``record`` is False when nothing may be recorded at all (mode ``none``);
    otherwise recording still waits for the consent the mode asks for.

    ``rule`` names what won (``did:+1800...``, ``caller:US-CA``, ``site:US-TX``, ``default``,
    ``disabled``); ``parties`` lists every rule that was weighed.
    """

    mode: Mode
    record: bool
    allow_continue: bool
    decline_action: DeclineAction
    policy_id: str
    policy_version: str
    rule: str
    inputs: PolicyInputs
    parties: tuple[Party, ...] = ()
    include_ivr: bool = False

    def consent_policy(self) -> ConsentPolicy:
        """The view a flow's ``consent`` node gets through ``channel.recording.policy()``."""
        return ConsentPolicy(mode=self.mode if self.record else "none", allow_continue=self.allow_continue,
                             decline_action=self.decline_action, policy_id=self.policy_id,
                             policy_version=self.policy_version)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for consent evidence and the recording's manifest."""
        return asdict(self)


def jurisdiction_of(number: str) -> Jurisdiction:
    """The country (ISO 3166 alpha-2) and, for US numbers, the state as ``US-XX``; None when unknown.

    Toll-free and non-geographic numbers have no state; unparseable ones (``anonymous``) no country.
    """
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return Jurisdiction(None, None)
    if not phonenumbers.is_valid_number(parsed):
        return Jurisdiction(None, None)
    country = phonenumbers.region_code_for_number(parsed)
    if country != "US":
        return Jurisdiction(country, None)
    place = geocoder.description_for_number(parsed, "en").strip()
    suffix = _STATE_SUFFIX.search(place)
    state = suffix.group(1) if suffix else US_STATE_NAMES.get(place.lower())
    return Jurisdiction(country, f"US-{state}" if state else None)


def _rule_for(settings: RecordingSettings, where: Jurisdiction) -> tuple[str, Mode]:
    """The map entry for a place: its region's, else its country's unless the map splits that
    country by region (then the region must be known); anything else is unknown, i.e. consent."""
    table = settings.jurisdictions
    if where.region is not None and where.region in table:
        return where.region, table[where.region]
    if where.country is None:
        return "unknown", UNKNOWN
    splits = any(key.startswith(where.country + "-") for key in table)
    if where.country in table and (where.region is not None or not splits):
        return where.country, table[where.country]
    return f"unknown:{where.region or where.country}", UNKNOWN


def _site_jurisdiction(site: str) -> Jurisdiction:
    country, _, region = site.partition("-")
    return Jurisdiction(country, site if region else None)


def _version(decided: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(decided, sort_keys=True).encode()).hexdigest()[:12]


def resolve_policy(settings: RecordingSettings, *, caller: str, did: str, flow_id: str) -> ResolvedPolicy:
    """The strictest of the DID/flow rule, the caller's jurisdiction and the agents' site
    (``none < notify < consent``; unknown counts as consent). A DID or flow rule ``none`` means the
    call is not recorded, whatever else applies (do-not-record wins)."""
    where = jurisdiction_of(caller)
    inputs = PolicyInputs(caller, where.country, where.region, did, flow_id, settings.site)
    decided: dict[str, Any] = {"enabled": settings.enabled, "decline_action": settings.decline_action}
    entries = [entry for entry in (settings.dids.get(did), settings.flows.get(flow_id)) if entry is not None]
    include_ivr = next((e.include_ivr for e in entries if e.include_ivr is not None), settings.include_ivr)
    decided["include_ivr"] = include_ivr

    def result(mode: Mode, rule: str, policy_id: str, parties: tuple[Party, ...] = ()) -> ResolvedPolicy:
        decided.update(mode=mode, rule=rule)
        return ResolvedPolicy(mode=mode, record=mode != "none", allow_continue=mode == "notify",
                              decline_action=settings.decline_action, policy_id=policy_id,
                              policy_version=_version(decided), rule=rule, inputs=inputs, parties=parties,
                              include_ivr=include_ivr)

    if not settings.enabled:
        return result("none", "disabled", "disabled")
    named = [(f"did:{did}", settings.dids.get(did)), (f"flow:{flow_id}", settings.flows.get(flow_id))]
    matched = [(name, entry.mode) for name, entry in named if entry is not None]
    decided["policies"] = dict(matched) or {"default": settings.mode}
    policy_id = "+".join(name for name, _ in matched) or "default"
    for name, mode in matched:
        if mode == "none":
            return result("none", name, policy_id)
    parties = [Party("policy", name, mode) for name, mode in matched or [("default", settings.mode)]]
    caller_rule, caller_mode = _rule_for(settings, where)
    parties.append(Party("caller", caller_rule, caller_mode))
    if settings.site is not None:
        site_rule, site_mode = _rule_for(settings, _site_jurisdiction(settings.site))
        parties.append(Party("site", site_rule, site_mode))
    decided["jurisdictions"] = {p.rule: p.mode for p in parties if p.party != "policy"}
    decided["site"] = settings.site
    winner = max(parties, key=lambda p: STRICTNESS[p.mode])  # first of the strictest on a tie
    rule = winner.rule if winner.party == "policy" else f"{winner.party}:{winner.rule}"
    return result(winner.mode, rule, policy_id, tuple(parties))
