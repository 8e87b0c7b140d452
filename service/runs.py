"""Run markers: "a run of <key> is queued or running", for overlap control.

The scheduler marks an entry's run when it sends it (with an expiry that bounds how long a lost
worker can hold it); the worker clears the mark when the run ends for good (success, death, or
expiry). While marked, an entry with ``overlap = "skip"`` is not fired again. This module is the
only one that touches the table.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import String, delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, mapped_column

from service.db.engine import session
from service.db.models import Base, UtcDateTime


class RunMarker(Base):
    """One unfinished run of a key (a schedule entry)."""

    __tablename__ = "callboard_run_markers"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)


def is_running(key: str) -> str | None:
    """The run id of ``key``'s unfinished run, or ``None`` (no run, or its mark expired)."""
    with session() as db:
        row = db.get(RunMarker, key)
        if row is None or row.expires_at <= datetime.now(UTC):
            return None
        return row.run_id


def mark(key: str, run_id: str, ttl: float) -> None:
    """Record that ``run_id`` is ``key``'s run, for at most ``ttl`` seconds. Call it before
    sending the run's message, so a fast worker cannot clear the mark before it exists."""
    values = {"key": key, "run_id": run_id, "expires_at": datetime.now(UTC) + timedelta(seconds=ttl)}
    with session() as db:
        dialect = postgresql if db.get_bind().dialect.name == "postgresql" else sqlite
        statement = dialect.insert(RunMarker).values(**values)
        db.execute(statement.on_conflict_do_update(index_elements=["key"], set_=values))


def clear(key: str, run_id: str) -> None:
    """The run ``run_id`` of ``key`` ended: drop its mark (a newer run's mark stays)."""
    with session() as db:
        db.execute(delete(RunMarker).where(RunMarker.key == key, RunMarker.run_id == run_id))
