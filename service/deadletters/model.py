"""The dead-letter tables. Only :mod:`service.deadletters.store` reads or writes them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from service.db.models import Base, UtcDateTime

#: Why a message will not run again.
REASONS = (
    "exhausted",
    "non_retryable",
    "time_limit",
    "unknown_actor",
    "undecodable",
    "oversized",
    "bad_options",
    "wrong_queue",
    "bad_arguments",
    "expired",
    "unknown",
)

#: ``dead`` until an operator acts; ``requeuing`` while a requeue holds it; then ``requeued``.
STATES = ("dead", "requeuing", "requeued")


class DeadLetter(Base):
    """One message that stopped for good, with why, and what became of it."""

    __tablename__ = "callboard_dead_letters"
    __table_args__ = (
        Index("ix_callboard_dead_letters_state_id", "state", "id"),
        Index("ix_callboard_dead_letters_last_failed_at", "last_failed_at"),
        {"sqlite_autoincrement": True},  # never reuse a purged dead letter's id
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: One death of one message: ``<message id>:<retries>``, or the broker's id for undecodable bodies.
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    message_id: Mapped[str | None] = mapped_column(String(64), index=True)
    queue: Mapped[str] = mapped_column(String(200), index=True)
    actor: Mapped[str | None] = mapped_column(String(200), index=True)
    reason: Mapped[str] = mapped_column(String(32), index=True)
    args: Mapped[str | None] = mapped_column(Text)  # JSON, redacted
    kwargs: Mapped[str | None] = mapped_column(Text)  # JSON, redacted
    options: Mapped[str | None] = mapped_column(Text)  # JSON, redacted
    sealed_payload: Mapped[str | None] = mapped_column(Text)  # original args/kwargs, sealed
    raw_body: Mapped[str | None] = mapped_column(Text)  # undecodable bodies only, cut short
    exception_type: Mapped[str | None] = mapped_column(String(200))
    exception_message: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    first_failed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_failed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    stored_at: Mapped[datetime] = mapped_column(UtcDateTime)
    state: Mapped[str] = mapped_column(String(16), default="dead")
    requeue_count: Mapped[int] = mapped_column(Integer, default=0)
    requeue_token: Mapped[str | None] = mapped_column(String(64), index=True)
    requeue_claimed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    requeued_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    requeued_message_id: Mapped[str | None] = mapped_column(String(64))


class DeadLetterAlert(Base):
    """When the last dead-letter alert for an actor was sent (the rate limit's memory)."""

    __tablename__ = "callboard_dead_letter_alerts"

    actor: Mapped[str] = mapped_column(String(200), primary_key=True)
    last_sent_at: Mapped[datetime] = mapped_column(UtcDateTime)
    suppressed: Mapped[int] = mapped_column(Integer, default=0)
