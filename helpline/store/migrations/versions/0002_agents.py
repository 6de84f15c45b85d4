"""agents and agent_events

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_auto_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("extension", sa.String(32), primary_key=True),
        sa.Column("display_name", sa.String(64), nullable=False),
        sa.Column("ha1_md5", sa.String(32), nullable=False),
        sa.Column("ha1_sha256", sa.String(64), nullable=False),
        sa.Column("realm", sa.String(), nullable=False),
        sa.Column("skills", _json, nullable=False),
        sa.Column("attributes", _json, nullable=False),
        sa.Column("queues", _json, nullable=False),
        sa.Column("wrapup_s", sa.Float(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
    )
    op.create_index("ix_agents_updated_at", "agents", ["updated_at"])

    op.create_table(
        "agent_events",
        sa.Column("id", _auto_id, primary_key=True, autoincrement=True),
        _ts("at"),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("extension", sa.String(), nullable=True),
        sa.Column("data", _json, nullable=False),
    )
    op.create_index("ix_agent_events_extension_at", "agent_events", ["extension", "at"])
    op.create_index("ix_agent_events_at", "agent_events", ["at"])
    # The latest event of a type per agent (what a restarting service restores)
    op.create_index("ix_agent_events_type_extension_id", "agent_events", ["type", "extension", "id"])


def downgrade() -> None:
    op.drop_table("agent_events")
    op.drop_table("agents")
