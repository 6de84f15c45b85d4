"""The agent-facing SIP listener: registrar with digest auth, OPTIONS qualify, and the dialer.

aiosipua stays inside :mod:`helpline.sbc_bridge`; nothing of it appears in these names.
"""

from __future__ import annotations

from .binding import Binding
from .edge import AgentEdge
from .ha1 import DigestAlgorithm, digest_ha1
from .leg import AgentLeg, DialOutcome
from .settings import AgentCredentials, AgentEdgeSettings

__all__ = [
    "AgentCredentials",
    "AgentEdge",
    "AgentEdgeSettings",
    "AgentLeg",
    "Binding",
    "DialOutcome",
    "DigestAlgorithm",
    "digest_ha1",
]
