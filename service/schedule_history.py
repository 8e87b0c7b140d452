"""The scheduler's fire history table (``callboard_schedule_fires``): its model and retention.

It lives in ``service`` so the maintenance actors can prune it without importing the scheduler
(``actors`` never import ``scheduler``); ``scheduler/state.py`` records and reads fires through
this model. A slot is handled at most once because the table is unique on (entry, slot).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Float, Integer, String, UniqueConstraint, delete
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Mapped, mapped_column

from service.db.engine import session
from service.db.models import Base, UtcDateTime


class Fire(Base):
    """One slot of one entry that was handled (sent, caught up, skipped...)."""

    __tablename__ = "callboard_schedule_fires"
    __table_args__ = (
        UniqueConstraint("entry", "slot", name="uq_callboard_schedule_fires_entry_slot"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entry: Mapped[str] = mapped_column(String(200), index=True)
    slot: Mapped[datetime] = mapped_column(UtcDateTime)
    sent_at: Mapped[datetime] = mapped_column(UtcDateTime)
    lateness: Mapped[float] = mapped_column(Float)  # seconds from slot to send
    outcome: Mapped[str] = mapped_column(String(32))
    message_id: Mapped[str | None] = mapped_column(String(64))
    token: Mapped[int] = mapped_column(Integer)  # the lease's fencing token at the time


def prune(retention: float, url: str | None = None) -> int:
    """Delete fires handled more than ``retention`` seconds ago; returns how many.

    The entries' own state (last slot, paused) is another table and stays, so catch-up and
    ``schedule list`` are not affected.
    """
    cutoff = datetime.now(UTC) - timedelta(seconds=retention)
    with session(url) as db:
        result: CursorResult[Any] = db.execute(delete(Fire).where(Fire.sent_at < cutoff))  # type: ignore[assignment]
        return int(result.rowcount)
