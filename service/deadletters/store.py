"""The dead-letter repository: the only module that reads or writes the dead-letter tables."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from service.db.engine import session
from service.deadletters.model import DeadLetter, DeadLetterAlert

#: Rows per statement in bulk operations: bounded memory whatever the number of dead letters.
BATCH_SIZE = 500

#: A requeue claim older than this is considered abandoned (the requeuing process died).
CLAIM_TIMEOUT = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters an operation applies to; unset fields do not filter."""

    ids: Sequence[int] | None = None
    queue: str | None = None
    actor: str | None = None
    reason: str | None = None
    since: datetime | None = None  # failed at or after
    older_than: datetime | None = None  # failed before
    state: str | tuple[str, ...] | None = "dead"  # one state, any of several, or any

    def apply(self, query: Select[Any]) -> Select[Any]:
        """``query`` restricted to this selection."""
        conditions: list[ColumnElement[bool]] = []
        if self.ids is not None:
            conditions.append(DeadLetter.id.in_(list(self.ids)))
        for column, value in (
            (DeadLetter.queue, self.queue),
            (DeadLetter.actor, self.actor),
            (DeadLetter.reason, self.reason),
        ):
            if value is not None:
                conditions.append(column == value)
        if isinstance(self.state, tuple):
            conditions.append(DeadLetter.state.in_(self.state))
        elif self.state is not None:
            conditions.append(DeadLetter.state == self.state)
        if self.since is not None:
            conditions.append(DeadLetter.last_failed_at >= self.since)
        if self.older_than is not None:
            conditions.append(DeadLetter.last_failed_at < self.older_than)
        return query.where(*conditions)


@dataclass(frozen=True, slots=True)
class Stored:
    """A dead letter just stored (what hooks and alerts receive)."""

    id: int
    queue: str
    actor: str | None
    reason: str


def summary(row: DeadLetter) -> dict[str, Any]:
    """The listing form of a dead letter (no arguments, no traceback)."""
    return {
        "id": row.id,
        "message_id": row.message_id,
        "queue": row.queue,
        "actor": row.actor,
        "reason": row.reason,
        "exception": f"{row.exception_type}: {row.exception_message}" if row.exception_type else None,
        "attempts": row.attempts,
        "failed_at": _iso(row.last_failed_at),
        "first_failed_at": _iso(row.first_failed_at),
        "state": row.state,
        "requeue_count": row.requeue_count,
        "requeued_message_id": row.requeued_message_id,
    }


def detail(row: DeadLetter) -> dict[str, Any]:
    """Everything about a dead letter that may be shown (arguments redacted)."""
    return {
        **summary(row),
        "args": _json(row.args),
        "kwargs": _json(row.kwargs),
        "options": _json(row.options),
        "exception_type": row.exception_type,
        "exception_message": row.exception_message,
        "traceback": row.traceback,
        "raw_body": row.raw_body,
        "stored_at": _iso(row.stored_at),
        "requeued_at": _iso(row.requeued_at),
    }


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def store_new(rows: Sequence[dict[str, Any]], url: str | None = None) -> list[Stored]:
    """Insert the rows whose ``dedupe_key`` is not stored yet; returns those inserted.

    Safe to call again with the same rows (a mover that died before removing them from the
    broker), and from several movers at once: a key already stored is skipped, and only the rows
    this call inserted are returned, so hooks and alerts count each dead letter once.
    """
    if not rows:
        return []
    unique = list({row["dedupe_key"]: row for row in rows}.values())
    with session(url) as db:
        statement = _insert_ignoring_duplicates(db).returning(
            DeadLetter.id, DeadLetter.queue, DeadLetter.actor, DeadLetter.reason
        )
        stored = db.execute(statement, unique).all()
    return sorted((Stored(*row) for row in stored), key=lambda dead: dead.id)


def _insert_ignoring_duplicates(db: Session) -> Any:
    dialect = db.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(DeadLetter).on_conflict_do_nothing(index_elements=["dedupe_key"])
    if dialect == "sqlite":
        return sqlite.insert(DeadLetter).on_conflict_do_nothing(index_elements=["dedupe_key"])
    raise NotImplementedError(f"dead letters need PostgreSQL or SQLite, not {dialect}")


def list_dead(selection: Selection, limit: int = 100, url: str | None = None) -> list[dict[str, Any]]:
    """The newest ``limit`` dead letters of ``selection``, newest first."""
    with session(url) as db:
        query = selection.apply(select(DeadLetter)).order_by(DeadLetter.id.desc()).limit(limit)
        return [summary(row) for row in db.scalars(query)]


def get(dead_letter_id: int, url: str | None = None) -> DeadLetter | None:
    """One dead letter (detached), or ``None``."""
    with session(url) as db:
        return db.get(DeadLetter, dead_letter_id)


def iter_batches(
    selection: Selection, batch_size: int = BATCH_SIZE, url: str | None = None
) -> Iterator[list[DeadLetter]]:
    """Every dead letter of ``selection`` in id order, ``batch_size`` at a time (keyset paging)."""
    after = 0
    while True:
        with session(url) as db:
            query = selection.apply(select(DeadLetter)).where(DeadLetter.id > after)
            batch = list(db.scalars(query.order_by(DeadLetter.id).limit(batch_size)))
        if not batch:
            return
        after = batch[-1].id
        yield batch


def stats(url: str | None = None) -> list[dict[str, Any]]:
    """Dead letters (state ``dead``) counted by queue, actor and reason."""
    with session(url) as db:
        query = (
            select(DeadLetter.queue, DeadLetter.actor, DeadLetter.reason, func.count())
            .where(DeadLetter.state == "dead")
            .group_by(DeadLetter.queue, DeadLetter.actor, DeadLetter.reason)
            .order_by(func.count().desc())
        )
        return [{"queue": q, "actor": a, "reason": r, "count": n} for q, a, r, n in db.execute(query)]


def count_dead(url: str | None = None) -> int:
    """How many dead letters wait for an operator (state ``dead``)."""
    with session(url) as db:
        return int(db.scalar(select(func.count()).where(DeadLetter.state == "dead")) or 0)


def claim(ids: Sequence[int], token: str, url: str | None = None) -> list[DeadLetter]:
    """Claim ``ids`` for a requeue run: only rows still ``dead`` (or abandoned mid-requeue) are
    taken, so two runs never both requeue one dead letter. Returns the claimed rows."""
    now = datetime.now(UTC)
    with session(url) as db:
        db.execute(
            update(DeadLetter)
            .where(DeadLetter.id.in_(list(ids)))
            .where(
                (DeadLetter.state == "dead")
                | ((DeadLetter.state == "requeuing") & (DeadLetter.requeue_claimed_at < now - CLAIM_TIMEOUT))
            )
            .values(state="requeuing", requeue_token=token, requeue_claimed_at=now)
        )
        query = select(DeadLetter).where(
            DeadLetter.id.in_(list(ids)), DeadLetter.requeue_token == token, DeadLetter.state == "requeuing"
        )
        return list(db.scalars(query.order_by(DeadLetter.id)))


def finish_requeue(rows: Sequence[DeadLetter], sent: dict[int, str], url: str | None = None) -> None:
    """Mark claimed ``rows`` requeued, each linked to the message id in ``sent`` that replaced it."""
    now = datetime.now(UTC)
    changes = [
        {
            "id": row.id,
            "state": "requeued",
            "requeued_at": now,
            "requeued_message_id": sent[row.id],
            "requeue_count": row.requeue_count + 1,
        }
        for row in rows
        if row.id in sent
    ]
    if changes:
        with session(url) as db:
            db.execute(update(DeadLetter), changes)


def release(ids: Sequence[int], url: str | None = None) -> None:
    """Return claimed dead letters to ``dead`` (their requeue could not be sent)."""
    if ids:
        with session(url) as db:
            db.execute(
                update(DeadLetter)
                .where(DeadLetter.id.in_(list(ids)), DeadLetter.state == "requeuing")
                .values(state="dead", requeue_token=None, requeue_claimed_at=None)
            )


def purge(selection: Selection, url: str | None = None) -> int:
    """Delete the dead letters of ``selection`` in batches; returns how many were deleted."""
    deleted = 0
    while True:
        with session(url) as db:
            ids = list(db.scalars(selection.apply(select(DeadLetter.id)).limit(BATCH_SIZE)))
            if not ids:
                return deleted
            db.execute(delete(DeadLetter).where(DeadLetter.id.in_(ids)))
            deleted += len(ids)


def prune(retention: float, url: str | None = None) -> int:
    """Delete dead letters (any state) that failed more than ``retention`` seconds ago."""
    cutoff = datetime.now(UTC) - timedelta(seconds=retention)
    return purge(Selection(older_than=cutoff, state=None), url)


def alert_allowed(actor: str, interval: float, count: int, url: str | None = None) -> int:
    """Record ``count`` new dead letters of ``actor`` for alerting.

    Returns how many dead letters the alert should report (these plus those suppressed since the
    last alert) when an alert may be sent now, or 0 when one was sent less than ``interval``
    seconds ago (the count is then kept for the next alert).
    """
    now = datetime.now(UTC)
    with session(url) as db:
        row = db.get(DeadLetterAlert, actor, with_for_update=True)
        if row is None:
            db.add(DeadLetterAlert(actor=actor, last_sent_at=now, suppressed=0))
            return count
        if now - row.last_sent_at < timedelta(seconds=interval):
            row.suppressed += count
            return 0
        total = row.suppressed + count
        row.last_sent_at, row.suppressed = now, 0
        return total
