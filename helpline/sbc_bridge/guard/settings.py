"""The ``[security]`` section: what the edge guard limits, and how hard.

Secure by default: every listener is guarded unless ``enabled`` is turned off (only the benchmark's
"policy off" baseline does that). A pydantic model, so a bad value fails at load time with the field
named, instead of showing up as a ban of the operator's own office at 3 a.m.
"""

from __future__ import annotations

import ipaddress
from functools import cached_property

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..config import checked_networks
from .fraud import OutboundSettings

DEFAULT_SCANNER_AGENTS: tuple[str, ...] = (
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "VaxSIPUserAgent",
    "pplsip",
    "sundayddr",
    "iWar",
    "sip-scan",
    "SIVuS",
    "smap",
)

MethodClass = str
"""``INVITE``, ``REGISTER``, ``OPTIONS`` or ``other``: the methods that get a bucket of their own."""
LIMITED_METHODS: frozenset[str] = frozenset({"INVITE", "REGISTER", "OPTIONS"})


def method_class(method: str) -> MethodClass:
    """The bucket a request method draws from (an upper-case method name)."""
    return method if method in LIMITED_METHODS else "other"


class MethodRate(BaseModel):
    """Token-bucket rates for one method class: per source and for the whole listener set (req/s)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    per_source: float = Field(gt=0)
    burst: float = Field(ge=1)
    global_rate: float = Field(alias="global", gt=0)


class RateSettings(BaseModel):
    """``[security.rates]``: one :class:`MethodRate` per method class (keys as on the wire)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    for_invite: MethodRate = Field(
        default=MethodRate(per_source=20, burst=40, global_rate=2000), alias="INVITE"
    )
    for_register: MethodRate = Field(
        default=MethodRate(per_source=20, burst=60, global_rate=2000), alias="REGISTER"
    )
    for_options: MethodRate = Field(
        default=MethodRate(per_source=10, burst=20, global_rate=2000), alias="OPTIONS"
    )
    for_other: MethodRate = Field(
        default=MethodRate(per_source=50, burst=100, global_rate=5000), alias="other"
    )

    def for_class(self, method_class: MethodClass) -> MethodRate:
        """The rates of ``INVITE``, ``REGISTER``, ``OPTIONS`` or ``other``."""
        return {
            "INVITE": self.for_invite,
            "REGISTER": self.for_register,
            "OPTIONS": self.for_options,
        }.get(method_class, self.for_other)


class CapSettings(BaseModel):
    """``[security.caps]``: hard size and count limits on what a peer may send (A9, A12)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    udp_message_bytes: int = Field(default=8192, ge=512, le=65535)
    stream_message_bytes: int = Field(default=65536, ge=1024)
    headers: int = Field(default=100, ge=10)
    header_bytes: int = Field(default=4096, ge=256)
    via_headers: int = Field(default=70, ge=1)
    sdp_media_lines: int = Field(default=8, ge=1)


class TcpSettings(BaseModel):
    """``[security.tcp]``: connections that have not yet sent one valid SIP message (A13)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    unauthenticated_per_source: int = Field(default=32, ge=1)
    first_message_timeout_s: float = Field(default=10.0, gt=0)


class SecuritySettings(BaseModel):
    """The guard's whole configuration (see docs/sip-edge-design.md for the defaults' reasoning).

    ``trusted_networks`` (CIDRs, e.g. an office NAT) are never banned nor limited per source; user
    locks still apply to their users. ``drop_user_agents`` are matched case-insensitively anywhere
    in a request's User-Agent. ``retry_after_s`` is the Retry-After of a 503 sent to a carrier over
    capacity.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    trusted_networks: tuple[str, ...] = ()
    ban_after_failures: int = Field(default=5, ge=1)
    lock_after_failures: int = Field(default=20, ge=1)
    failure_window_s: float = Field(default=60.0, gt=0)
    ban_s: float = Field(default=900.0, gt=0)
    lock_s: float = Field(default=900.0, gt=0)
    max_tracked_sources: int = Field(default=100_000, ge=16)
    max_bans: int = Field(default=100_000, ge=16)
    flood_ban_excess: int = Field(default=50, ge=1)
    flood_window_s: float = Field(default=2.0, gt=0)
    drop_user_agents: tuple[str, ...] = DEFAULT_SCANNER_AGENTS
    retry_after_s: int = Field(default=5, ge=1)
    rates: RateSettings = RateSettings()
    caps: CapSettings = CapSettings()
    tcp: TcpSettings = TcpSettings()
    outbound: OutboundSettings = OutboundSettings()

    @field_validator("trusted_networks")
    @classmethod
    def _networks_parse(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return checked_networks(value, "trusted network")

    @field_validator("drop_user_agents")
    @classmethod
    def _no_empty_agent(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not needle.strip() for needle in value):
            raise ValueError("an empty drop_user_agents entry would drop every request")
        return value

    @model_validator(mode="after")
    def _lock_not_before_ban(self) -> SecuritySettings:
        if self.lock_after_failures < self.ban_after_failures:
            raise ValueError(
                f"lock_after_failures={self.lock_after_failures} is below "
                f"ban_after_failures={self.ban_after_failures}: one source could lock any user "
                "before being banned"
            )
        return self

    @cached_property
    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """``trusted_networks`` parsed once."""
        return tuple(ipaddress.ip_network(n, strict=False) for n in self.trusted_networks)

    @cached_property
    def scanner_needles(self) -> tuple[str, ...]:
        """``drop_user_agents`` lower-cased once, for the per-request match."""
        return tuple(needle.lower() for needle in self.drop_user_agents)
