"""Configuration of the agent-facing listener and what the registrar knows about an agent.

A pydantic model so a bad ``[agents]`` section fails at load time with the field named. Credentials
carry HA1 digests only: the registrar never sees a password (see :mod:`.ha1`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..config import TlsVersion, port_or_off, tls_pair_complete, unique_transports


class AgentEdgeSettings(BaseModel):
    """How the agent listener binds and how its registrar, qualify and timers behave.

    ``port`` 0 binds an ephemeral port (tests). ``timer_t1`` is RFC 3261 T1: INVITE retransmissions
    (Timer A), the INVITE timeout (Timer B = 64*T1) and every in-dialog request timeout scale from it.
    ``user_agent`` None keeps product strings off the wire (scanners fingerprint them).
    ``digest_algorithms`` are offered in this order, one WWW-Authenticate each (RFC 8760: most
    preferred first) and only these are accepted. Some clients give up on a 401 carrying any
    algorithm they lack instead of picking one they know (baresip 1.0 / libre 1.x: "Function not
    implemented" whenever SHA-256 is offered); for such fleets, offer ``("MD5",)``.
    ``tls_port`` (0: ephemeral, ``"off"``: no TLS listener) and the ``tls_*`` files work as in
    :class:`..config.SipSettings`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=5070, ge=0, le=65535)
    transports: tuple[Literal["udp", "tcp"], ...] = ("udp", "tcp")
    advertised_host: str | None = None
    realm: str = Field(default="helpline", min_length=1)
    min_expires: int = Field(default=60, ge=1)
    max_expires: int = Field(default=3600, ge=1)
    default_expires: int = Field(default=600, ge=1)
    max_contacts: int = Field(default=3, ge=1)
    qualify_interval_s: float = Field(default=30.0, gt=0.0)
    qualify_timeout_s: float = Field(default=5.0, gt=0.0)
    qualify_failures: int = Field(default=2, ge=1)
    nonce_lifetime_s: float = Field(default=300.0, gt=0.0)
    digest_algorithms: tuple[Literal["SHA-256", "MD5"], ...] = ("SHA-256", "MD5")
    timer_t1: float = Field(default=0.5, gt=0.0, le=5.0)
    user_agent: str | None = None
    max_forwards: int = Field(default=70, ge=1, le=255)
    tls_port: int | None = Field(default=5071, ge=0, le=65535)
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

    @field_validator("digest_algorithms")
    @classmethod
    def _at_least_one_algorithm(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one digest algorithm (SHA-256 or MD5) is required")
        return tuple(dict.fromkeys(value))

    @model_validator(mode="after")
    def _tls_pair(self) -> AgentEdgeSettings:
        tls_pair_complete(self.tls_certificate, self.tls_key)
        return self

    @model_validator(mode="after")
    def _expiry_bounds(self) -> AgentEdgeSettings:
        if self.min_expires > self.max_expires:
            raise ValueError(f"min_expires={self.min_expires} is above max_expires={self.max_expires}")
        if not self.min_expires <= self.default_expires <= self.max_expires:
            raise ValueError(
                f"default_expires={self.default_expires} is outside "
                f"[min_expires={self.min_expires}, max_expires={self.max_expires}]"
            )
        return self


@dataclass(frozen=True, slots=True)
class AgentCredentials:
    """One agent's digest secrets under the listener's realm (hex HA1 for MD5 and SHA-256)."""

    extension: str
    ha1_md5: str
    ha1_sha256: str
