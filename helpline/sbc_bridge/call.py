"""The public face of a call at the trunk edge: what the upper layer sees and drives.

No SIP-library type appears here. SDP crosses as ``bytes``; the SIP leg behind an
:class:`InboundCall` is reached through the small :class:`CallLeg` protocol the glue implements.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

logger = logging.getLogger(__name__)

EndedBy = Literal["remote_bye", "cancel", "session_expired", "ack_timeout", "local"]


@dataclass(frozen=True, slots=True)
class CallEnd:
    """Why a call ended: who ended it, the SIP code involved (if any) and a human reason."""

    by: EndedBy
    sip_code: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class RefusedCall:
    """An INVITE the edge refused, for the CDR store (disposition ``refused``).

    ``sip_code`` is None when the INVITE was dropped without an answer.
    """

    sip_call_id: str
    trunk: str | None
    caller: str | None
    did: str | None
    source: tuple[str, int]
    transport: str
    sip_code: int | None
    reason: str


class CallLeg(Protocol):
    """What an :class:`InboundCall` needs from the SIP leg behind it."""

    def ringing(self, early_sdp: bytes | None) -> None: ...
    def answer(self, sdp: bytes) -> None: ...
    def reject(self, code: int, reason: str) -> None: ...
    def hangup(self) -> None: ...
    async def refer(self, target_uri: str, timeout: float) -> str: ...


class InboundCall:
    """One accepted INVITE from a trunk.

    Identity fields are already normalised: ``caller`` and ``did`` are E.164 (``caller`` keeps the
    raw user part when the carrier withheld or mangled it, e.g. ``anonymous``). ``pai`` and
    ``verstat`` are set only for trusted trunks. The upper layer sets ``on_ended``, ``on_dtmf`` and
    ``on_reoffer``; ``ended`` keeps the end reason for anyone who subscribes late.
    """

    def __init__(
        self,
        *,
        sip_call_id: str,
        trunk: str,
        caller: str,
        caller_name: str | None,
        did: str,
        flow_id: str,
        pai: str | None,
        verstat: str | None,
        source: tuple[str, int],
        transport: str,
        sdp_offer: bytes | None,
        leg: CallLeg,
    ) -> None:
        self.sip_call_id = sip_call_id
        self.trunk = trunk
        self.caller = caller
        self.caller_name = caller_name
        self.did = did
        self.flow_id = flow_id
        self.pai = pai
        self.verstat = verstat
        self.source = source
        self.transport = transport
        self.sdp_offer = sdp_offer
        self.on_ended: Callable[[CallEnd], None] | None = None
        self.on_dtmf: Callable[[str, int], None] | None = None
        self.on_reoffer: Callable[[bytes], bytes | None] | None = None
        self.ended: CallEnd | None = None
        self._leg = leg

    def __repr__(self) -> str:
        return (
            f"InboundCall({self.sip_call_id!r}, trunk={self.trunk!r}, caller={self.caller!r}, "
            f"did={self.did!r}, transport={self.transport!r})"
        )

    def ringing(self, early_sdp: bytes | None = None) -> None:
        """Send 180 Ringing, or 183 Session Progress carrying ``early_sdp`` for early media."""
        self._leg.ringing(early_sdp)

    def answer(self, sdp: bytes) -> None:
        """Send 200 OK with our SDP answer (retransmitted over UDP until the ACK arrives)."""
        self._leg.answer(sdp)

    def reject(self, code: int, reason: str) -> None:
        """Refuse the still-unanswered call with a final error response."""
        self._leg.reject(code, reason)

    def hangup(self) -> None:
        """End the call from our side (BYE if answered; 480 if still ringing)."""
        self._leg.hangup()

    async def refer(self, target_uri: str, timeout: float) -> str:
        """Blind-transfer the caller to ``target_uri`` with REFER.

        Returns ``connected``, ``busy``, ``no_answer`` or ``failed``.
        """
        return await self._leg.refer(target_uri, timeout)

    def _ended(self, end: CallEnd) -> None:
        """Record the end exactly once and tell the upper layer (called by the glue)."""
        if self.ended is not None:
            return
        self.ended = end
        if self.on_ended is None:
            logger.info(
                "call ended with no on_ended subscriber: %s", end, extra={"sip_call_id": self.sip_call_id}
            )
            return
        try:
            self.on_ended(end)
        except Exception:
            logger.exception("on_ended handler failed", extra={"sip_call_id": self.sip_call_id})

    def _dtmf(self, digit: str, duration_ms: int) -> None:
        if self.on_dtmf is None:
            logger.info("SIP INFO digit with no on_dtmf subscriber", extra={"sip_call_id": self.sip_call_id})
            return
        try:
            self.on_dtmf(digit, duration_ms)
        except Exception:
            logger.exception("on_dtmf handler failed", extra={"sip_call_id": self.sip_call_id})

    def _reoffer(self, offer: bytes) -> bytes | None:
        if self.on_reoffer is None:
            return None
        try:
            return self.on_reoffer(offer)
        except Exception:
            logger.exception("on_reoffer handler failed", extra={"sip_call_id": self.sip_call_id})
            return None
