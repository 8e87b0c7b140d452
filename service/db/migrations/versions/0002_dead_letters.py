"""Dead letters and their alert rate limit.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "callboard_dead_letters",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dedupe_key", sa.String(200), nullable=False, unique=True),
        sa.Column("message_id", sa.String(64)),
        sa.Column("queue", sa.String(200), nullable=False),
        sa.Column("actor", sa.String(200)),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("args", sa.Text),
        sa.Column("kwargs", sa.Text),
        sa.Column("options", sa.Text),
        sa.Column("sealed_payload", sa.Text),
        sa.Column("raw_body", sa.Text),
        sa.Column("exception_type", sa.String(200)),
        sa.Column("exception_message", sa.Text),
        sa.Column("traceback", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("first_failed_at", TZ, nullable=False),
        sa.Column("last_failed_at", TZ, nullable=False),
        sa.Column("stored_at", TZ, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("requeue_count", sa.Integer, nullable=False),
        sa.Column("requeue_token", sa.String(64)),
        sa.Column("requeue_claimed_at", TZ),
        sa.Column("requeued_at", TZ),
        sa.Column("requeued_message_id", sa.String(64)),
        sqlite_autoincrement=True,  # never reuse a purged dead letter's id
    )
    for column in ("message_id", "queue", "actor", "reason", "requeue_token"):
        op.create_index(f"ix_callboard_dead_letters_{column}", "callboard_dead_letters", [column])
    op.create_index("ix_callboard_dead_letters_state_id", "callboard_dead_letters", ["state", "id"])
    op.create_index("ix_callboard_dead_letters_last_failed_at", "callboard_dead_letters", ["last_failed_at"])
    op.create_table(
        "callboard_dead_letter_alerts",
        sa.Column("actor", sa.String(200), primary_key=True),
        sa.Column("last_sent_at", TZ, nullable=False),
        sa.Column("suppressed", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("callboard_dead_letter_alerts")
    op.drop_table("callboard_dead_letters")
