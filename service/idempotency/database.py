"""Idempotency keys in the database: the durable side of the key store (one row per live key).

Used for actors with ``idempotency_store="database"`` (keys that must outlive Redis) and for
every claim while Redis is unreachable. The same states as in Redis: ``running`` by a message id,
then ``done``. An expired row is reclaimed in the same statement that claims
(``INSERT ... ON CONFLICT DO UPDATE ... WHERE``), which PostgreSQL and SQLite both run atomically,
so two workers racing for a key never both win. :func:`prune` deletes expired rows. This module
is the only one that touches the table.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import String, delete, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Mapped, mapped_column

from service.db.engine import session
from service.db.models import Base, UtcDateTime


class IdempotencyRecord(Base):
    """One live idempotency key (a digest, see :mod:`service.idempotency.keys`)."""

    __tablename__ = "callboard_idempotency_keys"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    token: Mapped[str] = mapped_column(String(64))  # the message id that holds it
    state: Mapped[str] = mapped_column(String(8))  # running | done
    actor: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


def claim(key: str, token: str, actor: str, ttl: float, url: str | None = None) -> bool:
    """Claim ``key`` for message ``token`` for ``ttl`` seconds; False if another message holds it
    (running or done, unexpired). The same message id running again re-claims its own key."""
    now = datetime.now(UTC)
    values = {"key": key, "token": token, "state": "running", "actor": actor, "expires_at": _after(now, ttl)}
    table = IdempotencyRecord.__table__
    with session(url) as db:
        dialect = postgresql if db.get_bind().dialect.name == "postgresql" else sqlite
        statement = dialect.insert(IdempotencyRecord).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=["key"],
            set_={name: value for name, value in values.items() if name != "key"},
            where=(table.c.expires_at <= now) | ((table.c.token == token) & (table.c.state == "running")),
        )
        result: CursorResult[Any] = db.execute(statement)  # type: ignore[assignment]
        return bool(result.rowcount)


def succeed(key: str, token: str, ttl: float, url: str | None = None) -> bool:
    """Mark ``key`` done by ``token`` for ``ttl`` seconds from now; False if not its claim."""
    expires = _after(datetime.now(UTC), ttl)
    with session(url) as db:
        result: CursorResult[Any] = db.execute(  # type: ignore[assignment]
            update(IdempotencyRecord).where(*_held_by(key, token)).values(state="done", expires_at=expires)
        )
        return bool(result.rowcount)


def release(key: str, token: str, url: str | None = None) -> bool:
    """Delete ``key`` if ``token``'s run holds it; False if it does not."""
    with session(url) as db:
        result: CursorResult[Any] = db.execute(  # type: ignore[assignment]
            delete(IdempotencyRecord).where(*_held_by(key, token))
        )
        return bool(result.rowcount)


def prune(url: str | None = None) -> int:
    """Delete expired keys; returns how many."""
    with session(url) as db:
        result: CursorResult[Any] = db.execute(  # type: ignore[assignment]
            delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= datetime.now(UTC))
        )
        return int(result.rowcount)


def _held_by(key: str, token: str) -> tuple[Any, ...]:
    return (
        IdempotencyRecord.key == key,
        IdempotencyRecord.token == token,
        IdempotencyRecord.state == "running",
    )


def _after(now: datetime, ttl: float) -> datetime:
    return now + timedelta(seconds=ttl)
