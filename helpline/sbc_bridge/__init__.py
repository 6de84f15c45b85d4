"""SIP trunk edge: carriers' INVITEs in, screened and normalised calls out.

Built on aiosipua, which is imported only inside this package; nothing of it appears in the public
names below.
"""

from __future__ import annotations

from .agents import AgentCredentials, AgentEdge, AgentEdgeSettings, AgentLeg, Binding, DialOutcome
from .bridge import TrunkBridge
from .call import CallEnd, InboundCall, RefusedCall
from .config import DigestCredentials, EdgePolicy, SipSettings, TrunkConfig
from .numbers import is_e164, to_e164
from .policy import Decision, decide_call, match_trunk

__all__ = [
    "AgentCredentials",
    "AgentEdge",
    "AgentEdgeSettings",
    "AgentLeg",
    "Binding",
    "CallEnd",
    "Decision",
    "DialOutcome",
    "DigestCredentials",
    "EdgePolicy",
    "InboundCall",
    "RefusedCall",
    "SipSettings",
    "TrunkBridge",
    "TrunkConfig",
    "decide_call",
    "is_e164",
    "match_trunk",
    "to_e164",
]
