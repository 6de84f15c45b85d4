"""Who is calling whom: caller, DID, display name, PAI and verstat read from an INVITE.

PAI and ``verstat`` are identity assertions (RFC 3325, STIR/SHAKEN verification results); they are
believed only from a trusted trunk and dropped otherwise, so a stranger cannot claim a verified
number. What was dropped is returned too (``CallIdentity.stripped``): someone presenting assertions
they may not make is worth a security event, not just silence.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

from aiosipua.headers import Address, parse_address, parse_uri
from aiosipua.message import SipRequest

from .config import TrunkConfig
from .numbers import to_e164

logger = logging.getLogger(__name__)

_TEL = re.compile(r"tel:([^;>?]+)", re.IGNORECASE)
# RFC 8588 / ATIS-1000074 verstat tokens; some carriers append the attestation ("...-Passed-A").
_VERSTAT = re.compile(
    r"^(?P<status>TN-Validation-Passed|TN-Validation-Failed|No-TN-Validation)(?:-(?P<attest>[ABC]))?$",
    re.IGNORECASE,
)
VerstatStatus = Literal["passed", "failed", "none"]
Attestation = Literal["A", "B", "C"]

_STATUS: dict[str, VerstatStatus] = {
    "tn-validation-passed": "passed",
    "tn-validation-failed": "failed",
    "no-tn-validation": "none",
}
_ATTESTATIONS: dict[str, Attestation] = {"A": "A", "B": "B", "C": "C"}
_TOKEN: dict[VerstatStatus, str] = {
    "passed": "TN-Validation-Passed", "failed": "TN-Validation-Failed", "none": "No-TN-Validation"
}
# Headers carrying identity assertions that only a member of the trust domain may make.
_ASSERTION_HEADERS = (
    ("p-asserted-identity", "P-Asserted-Identity"),
    ("remote-party-id", "Remote-Party-ID"),
)


@dataclass(frozen=True, slots=True)
class Verification:
    """A STIR/SHAKEN verification result as the terminating carrier reported it.

    ``status``: ``passed`` (the signature verified), ``failed`` (it did not: the number may be
    spoofed) or ``none`` (nothing to verify). ``attestation`` is the originating carrier's level (A:
    full, B: partial, C: gateway), known only for a passed verification.
    """

    status: VerstatStatus
    attestation: Attestation | None = None

    @property
    def value(self) -> str:
        """The canonical verstat text stored in the CDR, e.g. ``TN-Validation-Passed-A``."""
        token = _TOKEN[self.status]
        return f"{token}-{self.attestation}" if self.attestation else token


def parse_verstat(raw: str) -> Verification | None:
    """The verification a ``verstat`` parameter states, or None for an unknown value."""
    match = _VERSTAT.match(raw.strip())
    if match is None:
        return None
    status = _STATUS[match["status"].lower()]
    attest = (match["attest"] or "").upper()
    return Verification(status, _ATTESTATIONS.get(attest) if status == "passed" else None)


def passport_attestation(identity_header: str) -> Attestation | None:
    """The ``attest`` claim of an RFC 8224 Identity header's PASSporT, or None.

    Read without checking the signature: it is used only from a trusted trunk whose verstat says
    the carrier verified it.
    """
    token = identity_header.split(";", 1)[0].strip()
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    attest = claims.get("attest") if isinstance(claims, dict) else None
    return _ATTESTATIONS.get(attest) if isinstance(attest, str) else None


@dataclass(frozen=True, slots=True)
class CallIdentity:
    """Caller and called numbers (raw and E.164), display name and trusted identity assertions."""

    caller_raw: str
    caller: str | None
    caller_name: str | None
    did_raw: str
    did: str | None
    pai: str | None
    verstat: str | None
    verification: Verification | None = None
    stripped: tuple[str, ...] = ()
    """Identity assertions an untrusted trunk sent and we dropped (header names, ``verstat``)."""

    @property
    def caller_display(self) -> str:
        """E.164 caller when known, else what the carrier sent (``anonymous`` ...)."""
        return self.caller or self.caller_raw or "anonymous"


def _user(address_text: str) -> str:
    tel = _TEL.search(address_text)
    if tel and not address_text.lstrip().lower().startswith(("sip:", "sips:")) and "<sip" not in address_text:
        return unquote(tel.group(1))
    return unquote(parse_address(address_text).uri.user or "")  # "%32" is "2" (RFC 3261 §19.1.4)


def _verstat(address: Address) -> str | None:
    for params in (address.uri.params, address.params):
        value = params.get("verstat")
        if value:
            return value
    return None


def _first_identity(value: str) -> str:
    """The first of a comma-separated list of name-addrs."""
    end = value.find(">")
    return value[: end + 1] if end != -1 else value.split(",", 1)[0]


def read_identity(request: SipRequest, trunk: TrunkConfig) -> CallIdentity:
    """Extract the identity of a new call as ``trunk`` presents it."""
    plan = {
        "country_code": trunk.country_code,
        "national_prefix": trunk.national_prefix,
        "international_prefix": trunk.international_prefix,
    }
    from_text = request.headers.get_first("from") or ""
    from_addr = parse_address(from_text)
    caller_raw = _user(from_text)
    did_raw = _user(request.uri) if (parse_uri(request.uri).user or "tel:" in request.uri.lower()) else ""
    if not did_raw:
        did_raw = _user(request.headers.get_first("to") or "")
    pai: str | None = None
    verification: Verification | None = None
    stripped: tuple[str, ...] = ()
    pai_text = request.headers.get_first("p-asserted-identity")
    pai_addr = parse_address(_first_identity(pai_text)) if pai_text else None
    raw_verstat = (_verstat(pai_addr) if pai_addr is not None else None) or _verstat(from_addr)
    if trunk.trusted:
        pai = _first_identity(pai_text).strip() if pai_text else None
        if raw_verstat is not None:
            verification = parse_verstat(raw_verstat)
            if verification is None:
                logger.warning(
                    "unrecognised verstat %r from trunk %s ignored", raw_verstat[:64], trunk.name,
                    extra={"sip_call_id": request.call_id},
                )
        if verification is not None and verification.status == "passed" and not verification.attestation:
            identity_header = request.headers.get_first("identity")
            attestation = passport_attestation(identity_header) if identity_header else None
            if attestation is not None:
                verification = Verification("passed", attestation)
    else:
        present = [name for key, name in _ASSERTION_HEADERS if request.headers.get_first(key)]
        stripped = (*present, "verstat") if raw_verstat is not None else tuple(present)
    return CallIdentity(
        caller_raw=caller_raw,
        caller=to_e164(caller_raw, **plan),
        caller_name=from_addr.display_name,
        did_raw=did_raw,
        did=to_e164(did_raw, **plan),
        pai=pai,
        verstat=verification.value if verification is not None else None,
        verification=verification,
        stripped=stripped,
    )
