"""How a call ended: the one closed set used by ``call.ended`` events, the CDR and the metrics."""

from __future__ import annotations

from enum import StrEnum


class Disposition(StrEnum):
    ANSWERED = "answered"  # answered and still up (or ended without a more specific reason)
    COMPLETED = "completed"  # the flow ran to its end
    ABANDONED = "abandoned"  # caller hung up after answer, before the flow finished
    CANCELLED = "cancelled"  # caller cancelled before answer
    REFUSED = "refused"  # refused by policy (unknown source, blocked country, unknown DID...)
    FAILED = "failed"  # media timeout, internal error, no codec
    TRANSFERRED = "transferred"  # left us through a transfer


DISPOSITIONS: frozenset[str] = frozenset(d.value for d in Disposition)
