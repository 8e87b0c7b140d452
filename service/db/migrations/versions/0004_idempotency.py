"""Idempotency keys: the durable side of the key store (one row per live key).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "callboard_idempotency_keys",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_callboard_idempotency_keys_expires_at", "callboard_idempotency_keys", ["expires_at"])


def downgrade() -> None:
    op.drop_table("callboard_idempotency_keys")
