"""The SIP edge's guard: bans, rate limits, caps, failure windows and connection limits.

One :class:`EdgeGuard` per process, shared by the trunk and agent listeners (see
docs/sip-edge-design.md). No store, web or bus imports: it reports through callbacks.
"""

from .bans import Ban, BanChange, BanTable
from .guard import PASS, Addr, EdgeGuard, Listener, Verdict
from .settings import SecuritySettings

__all__ = [
    "PASS",
    "Addr",
    "Ban",
    "BanChange",
    "BanTable",
    "EdgeGuard",
    "Listener",
    "SecuritySettings",
    "Verdict",
]
