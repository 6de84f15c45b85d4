"""Configuration of the trunk edge: the listener, the carrier trunks and the edge policy.

These are pydantic models so a bad value in the operator's configuration fails at load time with the
field named, instead of surfacing as a refused call at 3 a.m.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from .numbers import is_e164

RFC4028_MIN_SE = 90


TlsVersion = Literal["1.2", "1.3"]


def tls_pair_complete(certificate: Path | None, key: Path | None) -> None:
    """A TLS listener's certificate and key come together: both set, or both left to be generated."""
    if (certificate is None) != (key is None):
        raise ValueError(
            "tls_certificate and tls_key must be set together "
            "(leave both unset to use a generated self-signed pair)"
        )


def checked_networks(values: tuple[str, ...], what: str) -> tuple[str, ...]:
    """``values`` unchanged when each is an IP address or CIDR; else a ValueError naming ``what``."""
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError as exc:
            raise ValueError(f"{what} {value!r} is not an IP address or CIDR") from exc
    return values


def port_or_off(value: object) -> object:
    """``"off"`` (or false) turns an optional listener off: TOML and environment variables have no null."""
    if value is False or (isinstance(value, str) and value.strip().lower() in ("off", "none", "")):
        return None
    return value


def unique_transports(value: tuple[str, ...]) -> tuple[str, ...]:
    """A listener's transports, each once, in the order given; at least one."""
    if not value:
        raise ValueError("at least one transport (udp or tcp) is required")
    return tuple(dict.fromkeys(value))


class SipSettings(BaseModel):
    """How the edge listens and behaves on the wire.

    ``user_agent`` is None by default: replies carry no product or version string (scanners fingerprint
    them). ``min_se`` below the RFC 4028 floor of 90 s is refused unless ``allow_short_session_timers``
    is set, which exists for tests that cannot wait minutes for a dead session. ``timer_t1`` is the
    RFC 3261 T1 (all retransmission and timeout timers scale from it); tests shorten it to see an ACK
    timeout in seconds rather than 32 s.

    ``tls_port`` is the SIP-over-TLS listener (0: ephemeral, ``"off"``: none). ``tls_certificate`` and
    ``tls_key`` are PEM files; left unset, :func:`helpline.sbc_bridge.guard.tls.resolve_tls` fills them
    with a self-signed pair generated once, so the embedded default still speaks TLS.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=5060, ge=0, le=65535)
    transports: tuple[Literal["udp", "tcp"], ...] = ("udp", "tcp")
    advertised_host: str | None = None
    non_trunk_policy: Literal["drop", "reject"] = "drop"
    session_expires: int | None = Field(default=1800, ge=1)
    min_se: int = Field(default=RFC4028_MIN_SE, ge=1)
    allow_short_session_timers: bool = False
    user_agent: str | None = None
    max_forwards: int = Field(default=70, ge=1, le=255)
    timer_t1: float = Field(default=0.5, gt=0.0, le=5.0)
    tls_port: int | None = Field(default=5061, ge=0, le=65535)
    tls_certificate: Path | None = None
    tls_key: Path | None = None
    tls_min_version: TlsVersion = "1.2"

    @field_validator("transports")
    @classmethod
    def _at_least_one_transport(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return unique_transports(value)

    @field_validator("tls_port", mode="before")
    @classmethod
    def _tls_off(cls, value: object) -> object:
        return port_or_off(value)

    @model_validator(mode="after")
    def _tls_pair(self) -> SipSettings:
        tls_pair_complete(self.tls_certificate, self.tls_key)
        return self

    @model_validator(mode="after")
    def _session_timer_bounds(self) -> SipSettings:
        if self.min_se < RFC4028_MIN_SE and not self.allow_short_session_timers:
            raise ValueError(
                f"min_se={self.min_se} is below the RFC 4028 floor of {RFC4028_MIN_SE} s "
                "(set allow_short_session_timers only in tests)"
            )
        if self.session_expires is not None and self.session_expires < self.min_se:
            raise ValueError(f"session_expires={self.session_expires} is below min_se={self.min_se}")
        return self


class DigestCredentials(BaseModel):
    """Credentials a trunk must present (RFC 3261 §22 digest) before its INVITEs are accepted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    username: str = Field(min_length=1)
    password: SecretStr = Field(min_length=1)  # never printed: `helpline config` shows **********
    realm: str = Field(min_length=1)


class TrunkConfig(BaseModel):
    """One carrier trunk: where it sends from, how it numbers, which DIDs it delivers.

    ``sources`` lists IPs or CIDRs (carriers signal from several addresses and fail over between
    them). The numbering fields turn the carrier's national or international dialling forms into
    E.164. ``trusted`` marks the trunk as inside our RFC 3325 trust domain: only then are
    P-Asserted-Identity and ``verstat`` believed. ``tls_client_ca`` turns on mutual TLS for the trunk:
    its TLS connections must present a certificate signed by that CA (and naming ``tls_client_name``
    when set), because a source address alone is weak evidence on a stream a peer chose to open.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    sources: tuple[str, ...] = Field(min_length=1)
    credentials: DigestCredentials | None = None
    country_code: str = Field(default="1", pattern=r"^[1-9][0-9]{0,2}$")
    national_prefix: str = Field(default="1", pattern=r"^[0-9]{0,3}$")
    international_prefix: str = Field(default="011", pattern=r"^[0-9]{0,4}$")
    dids: Mapping[str, str] = Field(default_factory=dict)
    trusted: bool = True
    tls_client_ca: Path | None = None
    tls_client_name: str | None = Field(default=None, min_length=1)

    @field_validator("sources")
    @classmethod
    def _valid_networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return checked_networks(value, "source")

    @field_validator("dids")
    @classmethod
    def _dids_are_e164(cls, value: Mapping[str, str]) -> Mapping[str, str]:
        for did in value:
            if not is_e164(did):
                raise ValueError(f"DID {did!r} is not E.164 (+ followed by 6 to 15 digits)")
        return dict(value)

    @model_validator(mode="after")
    def _client_name_needs_ca(self) -> TrunkConfig:
        if self.tls_client_name is not None and self.tls_client_ca is None:
            raise ValueError("tls_client_name needs tls_client_ca (the CA that signs its certificate)")
        return self

    @cached_property
    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """The trunk's sources as networks (a bare address is a /32 or /128), computed once."""
        return tuple(ipaddress.ip_network(s, strict=False) for s in self.sources)


class EdgePolicy(BaseModel):
    """Call-level policy applied at the edge before any IVR runs.

    ``blocked_countries`` holds E.164 prefixes (``"+7"``, ``"+850"``); a call whose caller or DID
    starts with one is refused with 403. Rate limits and bans (a later issue) belong here too.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    blocked_countries: tuple[str, ...] = ()

    @field_validator("blocked_countries")
    @classmethod
    def _prefixes_are_plus_digits(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for prefix in value:
            if not (prefix.startswith("+") and prefix[1:].isdigit() and len(prefix) > 1):
                raise ValueError(f"blocked country prefix {prefix!r} must look like '+7' or '+850'")
        return value
