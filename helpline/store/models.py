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
    "AuditEntry",
    "Ban",
    "Base",
    "Call",
    "CallEvent",
    "ConsentRecord",
    "Disposition",
    "Recording",
    "RetentionPolicy",
    "SecurityEvent",
    "UTCDateTime",
    "User",
    "UserSession",
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


class User(Base):
    """A person who signs in to the web UI or the API. One credential is one person: usernames are
    never shared, and ``password_hash`` is argon2id. ``agent_extension`` links an ``agent`` user to the
    agent they are."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))  # admin | supervisor | agent | compliance
    password_hash: Mapped[str] = mapped_column(String)
    agent_extension: Mapped[str | None] = mapped_column(String(32))
    disabled: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    password_changed_at: Mapped[datetime]


class UserSession(Base):
    """A signed-in browser or API session. Only the SHA-256 of the secret token is stored."""

    __tablename__ = "user_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 hex of the token
    user_id: Mapped[int] = mapped_column(AutoId, ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # browser | api
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    end_reason: Mapped[str | None] = mapped_column(String)
    client_ip: Mapped[str | None] = mapped_column(String)
    user_agent: Mapped[str | None] = mapped_column(String)

    __table_args__ = (Index("ix_user_sessions_user_id_ended_at", "user_id", "ended_at"),)


class AuditEntry(Base):
    """Append-only audit log: who did what to which object, from where. Each entry carries the hash
    of the previous one, so removing or editing a row breaks the chain (database triggers refuse
    UPDATE and DELETE outright)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    actor: Mapped[str | None] = mapped_column(String(64))  # username, None for the system
    role: Mapped[str | None] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(32))
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))  # ok | denied | failed
    client_ip: Mapped[str | None] = mapped_column(String)
    detail: Mapped[dict[str, Any]]
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_audit_log_at_id", "at", "id"),
        Index("ix_audit_log_target", "target_type", "target_id", "id"),
        Index("ix_audit_log_actor_id", "actor", "id"),
        Index("ix_audit_log_action_id", "action", "id"),
    )


class ConsentRecord(Base):
    """One consent decision as evidence (append-only; triggers refuse UPDATE and DELETE).

    ``record_sha256`` is the SHA-256 of the record's canonical JSON, which the recording's manifest
    carries, so the evidence and the recording vouch for each other."""

    __tablename__ = "consent_records"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    call_id: Mapped[str] = mapped_column(String(32))
    party: Mapped[str] = mapped_column(String(16))  # caller | agent
    outcome: Mapped[str] = mapped_column(String(16))  # granted | denied | no_response | withdrawn
    method: Mapped[str] = mapped_column(String(16))  # dtmf | continue | notice | withdraw_key
    response: Mapped[str | None] = mapped_column(String(16))
    policy_id: Mapped[str] = mapped_column(String(64))
    policy_version: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(16))  # none | notify | consent
    jurisdiction: Mapped[dict[str, Any]]
    prompt_id: Mapped[str | None] = mapped_column(String(64))
    language: Mapped[str | None] = mapped_column(String(16))
    prompt_sha256: Mapped[str | None] = mapped_column(String(64))
    prompt_started_at: Mapped[datetime | None]
    prompt_ended_at: Mapped[datetime | None]
    responded_at: Mapped[datetime | None]
    decided_at: Mapped[datetime]
    clock_source: Mapped[str] = mapped_column(String(32))
    record_sha256: Mapped[str] = mapped_column(String(64))

    __table_args__ = (Index("ix_consent_records_call_id", "call_id", "decided_at"),)


class Recording(Base):
    """One call's recording: where it is, what it holds, how long it is kept and why.

    ``channels`` is the channel map (never inferred from the file), ``overlays`` the spans and marks a
    reviewer sees (consent, pauses, holds, transfers, agents). ``status``: ``recording`` (spooling),
    ``stored``, ``recovered`` (finished by recovery after a crash), ``empty`` (started, but the call or the
    process ended before a frame was captured), ``deleted`` (expired or removed;
    the row stays as the receipt), ``erased`` (deleted on a subject's request, personal data cleared).
    """

    __tablename__ = "recordings"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    call_id: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    caller: Mapped[str | None] = mapped_column(String)
    did: Mapped[str | None] = mapped_column(String)
    queue: Mapped[str | None] = mapped_column(String)
    agent: Mapped[str | None] = mapped_column(String(32))
    agents: Mapped[list[dict[str, Any]]]
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    duration_s: Mapped[float | None] = mapped_column(Float)
    channels: Mapped[list[dict[str, Any]]]
    media_format: Mapped[dict[str, Any]]
    overlays: Mapped[list[dict[str, Any]]]
    consent_outcome: Mapped[str | None] = mapped_column(String(16))
    consent_ids: Mapped[list[dict[str, Any]]]
    policy: Mapped[dict[str, Any]]
    retention_policy: Mapped[str] = mapped_column(String(64))
    delete_after: Mapped[datetime]
    floor_until: Mapped[datetime]
    legal_hold: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument)
    storage_key: Mapped[str | None] = mapped_column(String)
    encrypted: Mapped[bool] = mapped_column(Boolean)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    manifest_sha256: Mapped[str | None] = mapped_column(String(64))
    disposition: Mapped[str | None] = mapped_column(String)
    deleted_at: Mapped[datetime | None]
    deletion: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument)

    __table_args__ = (
        Index("ix_recordings_started_at_id", "started_at", "id"),
        Index("ix_recordings_call_id", "call_id"),
        Index("ix_recordings_caller_started_at", "caller", "started_at"),
        Index("ix_recordings_did_started_at", "did", "started_at"),
        Index("ix_recordings_agent_started_at", "agent", "started_at"),
        Index("ix_recordings_queue_started_at", "queue", "started_at"),
        Index("ix_recordings_status_delete_after", "status", "delete_after"),
    )


class RetentionPolicy(Base):
    """How long recordings under a policy are kept. ``floor_days`` comes from the configuration only:
    an admin may lengthen ``days`` through the API but never shorten it below the floor."""

    __tablename__ = "retention_policies"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    days: Mapped[int] = mapped_column(Integer)
    floor_days: Mapped[int] = mapped_column(Integer)
    purpose: Mapped[str] = mapped_column(String)
    lawful_basis: Mapped[str] = mapped_column(String)
    updated_by: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime]


class Ban(Base):
    """A ban the SIP edge's guard imposed: a source address (``kind`` ``source``) or a locked extension
    (``user``). One row per key: a new ban of the same key replaces the old one, whose history stays in
    ``security_events``. ``until`` null means no expiry. A lift (by the CLI, the API or the expiry) sets
    ``lifted_at``/``lifted_by``; ``updated_at`` moves on every change, so a running service polling it
    picks up what another process did."""

    __tablename__ = "bans"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # source | user
    reason: Mapped[str] = mapped_column(String(64))
    since: Mapped[datetime]
    until: Mapped[datetime | None]
    lifted_at: Mapped[datetime | None]
    lifted_by: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime]

    __table_args__ = (
        Index("ix_bans_updated_at", "updated_at"),
        Index("ix_bans_lifted_at_until", "lifted_at", "until"),
    )
