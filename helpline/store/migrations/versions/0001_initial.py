"""calls, call_events and security_events

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_auto_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("id", sa.String(32), primary_key=True),
        *(
            sa.Column(name, sa.String(), nullable=True)
            for name in (
                "sip_call_id",
                "trunk",
                "caller",
                "caller_name",
                "did",
                "pai",
                "verstat",
                "source",
                "transport",
                "codec",
                "flow_id",
                "flow_version",
                "disposition",
            )
        ),
        sa.Column("sip_code", sa.Integer(), nullable=True),
        sa.Column("end_reason", sa.String(), nullable=True),
        _ts("started_at", nullable=False),
        _ts("answered_at"),
        _ts("ended_at"),
    )
    op.create_index("ix_calls_started_at_id", "calls", ["started_at", "id"])
    for column in ("caller", "did", "trunk", "disposition", "flow_id"):
        op.create_index(f"ix_calls_{column}_started_at", "calls", [column, "started_at"])
    op.create_index("ix_calls_sip_call_id", "calls", ["sip_call_id"])

    op.create_table(
        "call_events",
        sa.Column("id", _auto_id, primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.String(32), sa.ForeignKey("calls.id", ondelete="CASCADE"), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        _ts("at", nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("node_id", sa.String(), nullable=True),
        sa.Column("data", _json, nullable=False),
        sa.UniqueConstraint("call_id", "seq", name="uq_call_events_call_id_seq"),
    )

    op.create_table(
        "security_events",
        sa.Column("id", _auto_id, primary_key=True, autoincrement=True),
        _ts("at", nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=True),
        sa.Column("transport", sa.String(), nullable=True),
        sa.Column("data", _json, nullable=False),
    )
    op.create_index("ix_security_events_at_id", "security_events", ["at", "id"])
    op.create_index("ix_security_events_type_at", "security_events", ["type", "at"])
    op.create_index("ix_security_events_source_at", "security_events", ["source", "at"])


def downgrade() -> None:
    op.drop_table("security_events")
    op.drop_table("call_events")
    op.drop_table("calls")
