"""The tables: one CDR row per call, its append-only event log, security events, agents and their
(non-call) event log.

Times are stored as UTC. SQLite has no time zone type, so ``UTCDateTime`` stores naive UTC there and
always hands back aware UTC datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from helpline.events.dispositions import DISPOSITIONS, Disposition

__all__ = [
    "DISPOSITIONS",
    "Agent",
    "AgentEvent",
    "Base",
    "Call",
    "CallEvent",
    "Disposition",
    "SecurityEvent",
    "UTCDateTime",
]


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that goes in as any aware datetime and comes out as aware UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: Helpline stores aware UTC times only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JsonDocument = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
AutoId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JsonDocument,
        list[dict[str, Any]]: JsonDocument,
    }


class Call(Base):
    """One CDR row: inserted on ``call.offered``, completed by ``call.answered``/``call.ended``."""

    __tablename__ = "calls"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    sip_call_id: Mapped[str | None] = mapped_column(String)
    trunk: Mapped[str | None] = mapped_column(String)
    caller: Mapped[str | None] = mapped_column(String)
    caller_name: Mapped[str | None] = mapped_column(String)
    did: Mapped[str | None] = mapped_column(String)
    pai: Mapped[str | None] = mapped_column(String)
    verstat: Mapped[str | None] = mapped_column(String)
    source: Mapped[str | None] = mapped_column(String)  # "ip:port"
    transport: Mapped[str | None] = mapped_column(String)
    codec: Mapped[str | None] = mapped_column(String)
    flow_id: Mapped[str | None] = mapped_column(String)
    flow_version: Mapped[str | None] = mapped_column(String)
    disposition: Mapped[str | None] = mapped_column(String)  # a Disposition value; NULL while ringing
    sip_code: Mapped[int | None] = mapped_column(Integer)
    end_reason: Mapped[str | None] = mapped_column(String)
    started_at: Mapped[datetime]
    answered_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]

    events: Mapped[list[CallEvent]] = relationship(
        back_populates="call", order_by="CallEvent.seq", lazy="raise", passive_deletes=True
    )

    __table_args__ = (
        # Newest-first keyset paging, alone and under each API filter.
        Index("ix_calls_started_at_id", "started_at", "id"),
        Index("ix_calls_caller_started_at", "caller", "started_at"),
        Index("ix_calls_did_started_at", "did", "started_at"),
        Index("ix_calls_trunk_started_at", "trunk", "started_at"),
        Index("ix_calls_disposition_started_at", "disposition", "started_at"),
        Index("ix_calls_flow_id_started_at", "flow_id", "started_at"),
        Index("ix_calls_sip_call_id", "sip_call_id"),
    )


class CallEvent(Base):
    """Append-only log of every domain event of one call, in publish order (``seq``)."""

    __tablename__ = "call_events"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(String(32), ForeignKey("calls.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime]
    type: Mapped[str] = mapped_column(String)
    node_id: Mapped[str | None] = mapped_column(String)
    data: Mapped[dict[str, Any]]

    call: Mapped[Call] = relationship(back_populates="events", lazy="raise")

    __table_args__ = (UniqueConstraint("call_id", "seq", name="uq_call_events_call_id_seq"),)


class SecurityEvent(Base):
    """A ``security.*`` event: refused sources, blocked countries, malformed requests..."""

    __tablename__ = "security_events"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    type: Mapped[str] = mapped_column(String)
    source: Mapped[str | None] = mapped_column(String)
    transport: Mapped[str | None] = mapped_column(String)
    data: Mapped[dict[str, Any]]

    __table_args__ = (
        Index("ix_security_events_at_id", "at", "id"),
        Index("ix_security_events_type_at", "type", "at"),
        Index("ix_security_events_source_at", "source", "at"),
    )


class Agent(Base):
    """An agent as configured (``helpline.queue.profile.AgentProfile``) plus its SIP digest HA1s.

    The password itself is never stored: only H(extension:realm:password) in MD5 and SHA-256, tied to
    ``realm``. ``queues`` holds ``[{"queue": name, "tier": n}, ...]``. ``updated_at`` lets a running
    service pick up agents edited by another process (the CLI).
    """

    __tablename__ = "agents"

    extension: Mapped[str] = mapped_column(String(32), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(64))
    ha1_md5: Mapped[str] = mapped_column(String(32))
    ha1_sha256: Mapped[str] = mapped_column(String(64))
    realm: Mapped[str] = mapped_column(String)
    skills: Mapped[dict[str, Any]]
    attributes: Mapped[dict[str, Any]]
    queues: Mapped[list[dict[str, Any]]]
    wrapup_s: Mapped[float | None] = mapped_column(Float)
    enabled: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (Index("ix_agents_updated_at", "updated_at"),)


class AgentEvent(Base):
    """Append-only log of ``agent.*`` events that belong to no call (presence, reachability...)."""

    __tablename__ = "agent_events"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    type: Mapped[str] = mapped_column(String)
    extension: Mapped[str | None] = mapped_column(String)
    data: Mapped[dict[str, Any]]

    __table_args__ = (
        Index("ix_agent_events_extension_at", "extension", "at"),
        Index("ix_agent_events_at", "at"),
        Index("ix_agent_events_type_extension_id", "type", "extension", "id"),
    )
