"""Who is calling whom: caller, DID, display name, PAI and verstat read from an INVITE.

PAI and ``verstat`` are identity assertions (RFC 3325, STIR/SHAKEN verification results); they are
believed only from a trusted trunk and dropped otherwise, so a stranger cannot claim a verified
number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiosipua.headers import Address, parse_address, parse_uri
from aiosipua.message import SipRequest

from .config import TrunkConfig
from .numbers import to_e164

_TEL = re.compile(r"tel:([^;>?]+)", re.IGNORECASE)


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

    @property
    def caller_display(self) -> str:
        """E.164 caller when known, else what the carrier sent (``anonymous`` ...)."""
        return self.caller or self.caller_raw or "anonymous"


def _user(address_text: str) -> str:
    tel = _TEL.search(address_text)
    if tel and not address_text.lstrip().lower().startswith(("sip:", "sips:")) and "<sip" not in address_text:
        return tel.group(1)
    return parse_address(address_text).uri.user or ""


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
    verstat: str | None = None
    if trunk.trusted:
        pai_text = request.headers.get_first("p-asserted-identity")
        if pai_text:
            pai = _first_identity(pai_text).strip()
            verstat = _verstat(parse_address(pai))
        verstat = verstat or _verstat(from_addr)
    return CallIdentity(
        caller_raw=caller_raw,
        caller=to_e164(caller_raw, **plan),
        caller_name=from_addr.display_name,
        did_raw=did_raw,
        did=to_e164(did_raw, **plan),
        pai=pai,
        verstat=verstat,
    )
