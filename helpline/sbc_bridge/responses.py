"""Building a response outside a dialog: the transaction headers every UAS answer copies.

Both listeners (trunk and agent) answer requests that belong to no dialog yet (errors, OPTIONS,
REGISTER); RFC 3261 §8.2.6.2 says which headers such a response copies and that its To gets a tag.
"""

from __future__ import annotations

from aiosipua.message import SipRequest, SipResponse
from aiosipua.utils import generate_tag


def copy_transaction_headers(
    request: SipRequest, response: SipResponse, *, to_tag: str | None = None
) -> None:
    """Copy Via (all, in order), From, Call-ID and CSeq; copy To and add a tag when it has none.

    A 100 Trying gets no tag (§8.2.6.1: it does not establish anything).
    """
    for via in request.headers.get("via"):
        response.headers.append("Via", via)
    for name in ("From", "Call-ID", "CSeq"):
        value = request.headers.get_first(name)
        if value:
            response.headers.set_single(name, value)
    to_value = request.headers.get_first("to") or ""
    if to_value and ";tag=" not in to_value.replace(" ", "").lower() and response.status_code > 100:
        to_value += f";tag={to_tag or generate_tag()}"
    if to_value:
        response.headers.set_single("To", to_value)
