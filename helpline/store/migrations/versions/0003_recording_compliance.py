"""recording compliance: users, sessions, the audit log, consent evidence, recordings, retention

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_auto_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# Evidence tables refuse UPDATE and DELETE in the database itself, whoever connects.
APPEND_ONLY = ("audit_log", "consent_records")


def _append_only(table: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
            )
    else:
        op.execute(
            f"CREATE FUNCTION {table}_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN RAISE EXCEPTION '{table} is append-only'; END $$"
        )
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only()"
        )


def _drop_append_only(table: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for verb in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{verb}")
    else:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS {table}_append_only()")


def upgrade() -> None:
    op.create_table("audit_log",
    sa.Column("id", _auto_id, autoincrement=True, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.String(length=64), nullable=True),
    sa.Column("role", sa.String(length=16), nullable=True),
    sa.Column("action", sa.String(length=32), nullable=False),
    sa.Column("target_type", sa.String(length=32), nullable=True),
    sa.Column("target_id", sa.String(length=64), nullable=True),
    sa.Column("outcome", sa.String(length=16), nullable=False),
    sa.Column("client_ip", sa.String(), nullable=True),
    sa.Column("detail", _json, nullable=False),
    sa.Column("prev_hash", sa.String(length=64), nullable=False),
    sa.Column("entry_hash", sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint("id")
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index("ix_audit_log_action_id", ["action", "id"], unique=False)
        batch_op.create_index("ix_audit_log_actor_id", ["actor", "id"], unique=False)
        batch_op.create_index("ix_audit_log_at_id", ["at", "id"], unique=False)
        batch_op.create_index("ix_audit_log_target", ["target_type", "target_id", "id"], unique=False)

    op.create_table("consent_records",
    sa.Column("id", sa.String(length=32), nullable=False),
    sa.Column("call_id", sa.String(length=32), nullable=False),
    sa.Column("party", sa.String(length=16), nullable=False),
    sa.Column("outcome", sa.String(length=16), nullable=False),
    sa.Column("method", sa.String(length=16), nullable=False),
    sa.Column("response", sa.String(length=16), nullable=True),
    sa.Column("policy_id", sa.String(length=64), nullable=False),
    sa.Column("policy_version", sa.String(length=64), nullable=False),
    sa.Column("mode", sa.String(length=16), nullable=False),
    sa.Column("jurisdiction", _json, nullable=False),
    sa.Column("prompt_id", sa.String(length=64), nullable=True),
    sa.Column("language", sa.String(length=16), nullable=True),
    sa.Column("prompt_sha256", sa.String(length=64), nullable=True),
    sa.Column("prompt_started_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("prompt_ended_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("responded_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("clock_source", sa.String(length=32), nullable=False),
    sa.Column("record_sha256", sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint("id")
    )
    with op.batch_alter_table("consent_records", schema=None) as batch_op:
        batch_op.create_index("ix_consent_records_call_id", ["call_id", "decided_at"], unique=False)

    op.create_table("recordings",
    sa.Column("id", sa.String(length=32), nullable=False),
    sa.Column("call_id", sa.String(length=32), nullable=False),
    sa.Column("status", sa.String(length=16), nullable=False),
    sa.Column("caller", sa.String(), nullable=True),
    sa.Column("did", sa.String(), nullable=True),
    sa.Column("queue", sa.String(), nullable=True),
    sa.Column("agent", sa.String(length=32), nullable=True),
    sa.Column("agents", _json, nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("duration_s", sa.Float(), nullable=True),
    sa.Column("channels", _json, nullable=False),
    sa.Column("media_format", _json, nullable=False),
    sa.Column("overlays", _json, nullable=False),
    sa.Column("consent_outcome", sa.String(length=16), nullable=True),
    sa.Column("consent_ids", _json, nullable=False),
    sa.Column("policy", _json, nullable=False),
    sa.Column("retention_policy", sa.String(length=64), nullable=False),
    sa.Column("delete_after", sa.DateTime(timezone=True), nullable=False),
    sa.Column("floor_until", sa.DateTime(timezone=True), nullable=False),
    sa.Column("legal_hold", _json, nullable=True),
    sa.Column("storage_key", sa.String(), nullable=True),
    sa.Column("encrypted", sa.Boolean(), nullable=False),
    sa.Column("size_bytes", sa.BigInteger(), nullable=True),
    sa.Column("manifest_sha256", sa.String(length=64), nullable=True),
    sa.Column("disposition", sa.String(), nullable=True),
    sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("deletion", _json, nullable=True),
    sa.PrimaryKeyConstraint("id")
    )
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.create_index("ix_recordings_agent_started_at", ["agent", "started_at"], unique=False)
        batch_op.create_index("ix_recordings_call_id", ["call_id"], unique=False)
        batch_op.create_index("ix_recordings_caller_started_at", ["caller", "started_at"], unique=False)
        batch_op.create_index("ix_recordings_did_started_at", ["did", "started_at"], unique=False)
        batch_op.create_index("ix_recordings_queue_started_at", ["queue", "started_at"], unique=False)
        batch_op.create_index("ix_recordings_started_at_id", ["started_at", "id"], unique=False)
        batch_op.create_index("ix_recordings_status_delete_after", ["status", "delete_after"], unique=False)

    op.create_table("retention_policies",
    sa.Column("name", sa.String(length=64), nullable=False),
    sa.Column("days", sa.Integer(), nullable=False),
    sa.Column("floor_days", sa.Integer(), nullable=False),
    sa.Column("purpose", sa.String(), nullable=False),
    sa.Column("lawful_basis", sa.String(), nullable=False),
    sa.Column("updated_by", sa.String(length=64), nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("name")
    )
    op.create_table("users",
    sa.Column("id", _auto_id, autoincrement=True, nullable=False),
    sa.Column("username", sa.String(length=64), nullable=False),
    sa.Column("display_name", sa.String(length=128), nullable=False),
    sa.Column("role", sa.String(length=16), nullable=False),
    sa.Column("password_hash", sa.String(), nullable=False),
    sa.Column("agent_extension", sa.String(length=32), nullable=True),
    sa.Column("disabled", sa.Boolean(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("password_changed_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("username")
    )
    op.create_table("user_sessions",
    sa.Column("id", sa.String(length=64), nullable=False),
    sa.Column("user_id", _auto_id, nullable=False),
    sa.Column("kind", sa.String(length=16), nullable=False),
    sa.Column("csrf_token", sa.String(length=64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("end_reason", sa.String(), nullable=True),
    sa.Column("client_ip", sa.String(), nullable=True),
    sa.Column("user_agent", sa.String(), nullable=True),
    sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id")
    )
    with op.batch_alter_table("user_sessions", schema=None) as batch_op:
        batch_op.create_index("ix_user_sessions_user_id_ended_at", ["user_id", "ended_at"], unique=False)

    for table in APPEND_ONLY:
        _append_only(table)


def downgrade() -> None:
    for table in APPEND_ONLY:
        _drop_append_only(table)
    with op.batch_alter_table("user_sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_user_sessions_user_id_ended_at")

    op.drop_table("user_sessions")
    op.drop_table("users")
    op.drop_table("retention_policies")
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.drop_index("ix_recordings_status_delete_after")
        batch_op.drop_index("ix_recordings_started_at_id")
        batch_op.drop_index("ix_recordings_queue_started_at")
        batch_op.drop_index("ix_recordings_did_started_at")
        batch_op.drop_index("ix_recordings_caller_started_at")
        batch_op.drop_index("ix_recordings_call_id")
        batch_op.drop_index("ix_recordings_agent_started_at")

    op.drop_table("recordings")
    with op.batch_alter_table("consent_records", schema=None) as batch_op:
        batch_op.drop_index("ix_consent_records_call_id")

    op.drop_table("consent_records")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_log_target")
        batch_op.drop_index("ix_audit_log_at_id")
        batch_op.drop_index("ix_audit_log_actor_id")
        batch_op.drop_index("ix_audit_log_action_id")

    op.drop_table("audit_log")
