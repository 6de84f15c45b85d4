"""bans: sources and extensions the SIP edge's guard banned or locked

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "bans",
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        _ts("since"),
        _ts("until", nullable=True),
        _ts("lifted_at", nullable=True),
        sa.Column("lifted_by", sa.String(64), nullable=True),
        _ts("updated_at"),
    )
    # The running service polls for changes by updated_at; the active ones are unlifted and unexpired.
    op.create_index("ix_bans_updated_at", "bans", ["updated_at"])
    op.create_index("ix_bans_lifted_at_until", "bans", ["lifted_at", "until"])


def downgrade() -> None:
    op.drop_table("bans")
