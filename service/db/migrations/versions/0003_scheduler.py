"""Scheduler state: entries, fire history (unique per entry and slot), the leader lease, and the
run markers that make ``overlap = "skip"`` work.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "callboard_schedule_entries",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("last_slot", TZ),
        sa.Column("last_outcome", sa.String(32)),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_table(
        "callboard_schedule_fires",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("entry", sa.String(200), nullable=False),
        sa.Column("slot", TZ, nullable=False),
        sa.Column("sent_at", TZ, nullable=False),
        sa.Column("lateness", sa.Float, nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("message_id", sa.String(64)),
        sa.Column("token", sa.Integer, nullable=False),
        sa.UniqueConstraint("entry", "slot", name="uq_callboard_schedule_fires_entry_slot"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_callboard_schedule_fires_entry", "callboard_schedule_fires", ["entry"])
    op.create_table(
        "callboard_run_markers",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("run_id", sa.String(200), nullable=False),
        sa.Column("expires_at", TZ, nullable=False),
    )
    op.create_table(
        "callboard_scheduler_lease",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("token", sa.Integer, nullable=False),
        sa.Column("expires_at", TZ, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("callboard_scheduler_lease")
    op.drop_table("callboard_run_markers")
    op.drop_table("callboard_schedule_fires")
    op.drop_table("callboard_schedule_entries")
