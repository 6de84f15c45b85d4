"""Edge policy decisions as pure functions: which trunk sent this, and may this call come in.

Kept free of SIP objects so the order of checks (the thing that prevents a 404-versus-403 oracle) is
visible in one place and testable without a socket.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from .config import EdgePolicy, TrunkConfig
from .numbers import has_prefix


@dataclass(frozen=True, slots=True)
class Decision:
    """Outcome of the call policy: accepted with a flow, or refused with a SIP code and a reason.

    ``security_type`` names the security event a refusal raises (``security.unknown_did`` ...).
    """

    accepted: bool
    sip_code: int
    reason: str
    security_type: str | None = None
    flow_id: str | None = None


def match_trunk(source_ip: str, trunks: Sequence[TrunkConfig]) -> TrunkConfig | None:
    """The first trunk whose sources contain ``source_ip``, or None for a stranger."""
    try:
        address = ipaddress.ip_address(source_ip)
    except ValueError:
        return None
    for trunk in trunks:
        if any(address in network for network in trunk.networks):
            return trunk
    return None


def decide_call(
    trunk: TrunkConfig,
    caller: str | None,
    did: str | None,
    policy: EdgePolicy,
) -> Decision:
    """Decide a new call from a known trunk, given its caller and DID already in E.164 (or None).

    Order: blocked country (caller, then DID) before the DID lookup, so a blocked caller learns
    nothing about which numbers exist.
    """
    blocked = policy.blocked_countries
    if caller is not None and (prefix := has_prefix(caller, blocked)):
        return Decision(
            False, 403, f"caller {caller} in blocked country {prefix}", "security.blocked_country"
        )
    if did is not None and (prefix := has_prefix(did, blocked)):
        return Decision(False, 403, f"DID {did} in blocked country {prefix}", "security.blocked_country")
    if did is None:
        return Decision(False, 404, "called number is not a phone number", "security.unknown_did")
    flow_id = trunk.dids.get(did)
    if flow_id is None:
        return Decision(False, 404, f"DID {did} not configured on trunk {trunk.name}", "security.unknown_did")
    return Decision(True, 200, "accepted", None, flow_id)
