"""The scheduler's own tables: entry state (paused, last slot), fire history, and the lease.

This module is the only one that reads or writes them, except the fire history's retention
(:mod:`service.schedule_history`, where its model lives so maintenance can prune it). A slot is
sent at most once because the fire history has a unique key on (entry, slot): the lease only
keeps replicas from trying.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Boolean, Integer, String, case, func, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from service.db.engine import session
from service.db.models import Base, UtcDateTime
from service.schedule_history import Fire

#: Fire outcomes kept in the history.
OUTCOMES = ("sent", "caught_up", "manual", "skipped_overlap", "send_failed")


class EntryState(Base):
    """What the scheduler remembers of one entry across restarts and replicas."""

    __tablename__ = "callboard_schedule_entries"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    last_slot: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_outcome: Mapped[str | None] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Lease(Base):
    """Who leads: one row per lease name, with an expiry and a fencing token."""

    __tablename__ = "callboard_scheduler_lease"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    token: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)


@dataclass(frozen=True, slots=True)
class EntryView:
    """An entry's stored state."""

    name: str
    paused: bool
    last_slot: datetime | None
    last_outcome: str | None


def entry_states(names: list[str] | None = None) -> dict[str, EntryView]:
    """Stored state of ``names`` (every entry when ``None``)."""
    with session() as db:
        query = select(EntryState)
        if names is not None:
            query = query.where(EntryState.name.in_(names))
        return {
            row.name: EntryView(row.name, row.paused, row.last_slot, row.last_outcome)
            for row in db.scalars(query)
        }


def last_sent(names: list[str]) -> dict[str, datetime]:
    """When each of ``names`` last had a slot sent (on time or caught up), from the history."""
    query = (
        select(Fire.entry, func.max(Fire.sent_at))
        .where(Fire.entry.in_(names), Fire.outcome.in_(("sent", "caught_up")), Fire.message_id.is_not(None))
        .group_by(Fire.entry)
    )
    with session() as db:
        return {entry: sent for entry, sent in db.execute(query) if sent is not None}  # max keeps UtcDateTime


def set_paused(name: str, paused: bool) -> None:
    """Pause or resume ``name`` for every replica (creates its state row if needed)."""
    now = datetime.now(UTC)
    with session() as db:
        row = db.get(EntryState, name)
        if row is None:
            db.add(EntryState(name=name, paused=paused, updated_at=now))
        else:
            row.paused, row.updated_at = paused, now


def record_fire(
    entry: str,
    slot: datetime,
    outcome: str,
    token: int,
    message_id: str | None = None,
    sent_at: datetime | None = None,
) -> bool:
    """Claim ``slot`` of ``entry`` with ``outcome``; returns False if the slot was already handled.

    Call before sending (outcome ``sent``), then :func:`set_message`: a slot is claimed once even
    if two replicas try at the same time.
    """
    now = sent_at or datetime.now(UTC)
    try:
        with session() as db:
            db.add(
                Fire(
                    entry=entry,
                    slot=slot,
                    sent_at=now,
                    lateness=(now - slot).total_seconds(),
                    outcome=outcome,
                    message_id=message_id,
                    token=token,
                )
            )
            if outcome != "manual":  # a manual run is outside the timetable: missed slots stay missed
                _advance(db, entry, slot, outcome, now)
    except IntegrityError:
        return False
    return True


def unsent_fires(since: datetime) -> list[tuple[str, datetime]]:
    """(entry, slot) of the slots since ``since`` that were claimed for sending but have no
    message id: their send failed, or their leader died before it sent or recorded it."""
    query = (
        select(Fire.entry, Fire.slot)
        .where(
            Fire.slot >= since,
            Fire.message_id.is_(None),
            Fire.outcome.in_(("sent", "caught_up", "send_failed")),
        )
        .order_by(Fire.slot)
    )
    with session() as db:
        return [(entry, slot) for entry, slot in db.execute(query)]


def set_fire_result(entry: str, slot: datetime, outcome: str, message_id: str | None) -> None:
    """Record the message id (or the failure) of a claimed slot."""
    with session() as db:
        db.execute(
            update(Fire)
            .where(Fire.entry == entry, Fire.slot == slot)
            .values(outcome=outcome, message_id=message_id)
        )
        db.execute(update(EntryState).where(EntryState.name == entry).values(last_outcome=outcome))


def advance(entry: str, slot: datetime, outcome: str) -> None:
    """Move ``entry``'s last slot to ``slot`` without a fire (missed slots skipped by policy)."""
    with session() as db:
        _advance(db, entry, slot, outcome, datetime.now(UTC))


def _advance(db: Any, entry: str, slot: datetime, outcome: str, now: datetime) -> None:
    row = db.get(EntryState, entry, with_for_update=True)
    if row is None:
        db.add(EntryState(name=entry, paused=False, last_slot=slot, last_outcome=outcome, updated_at=now))
        return
    last = row.last_slot
    if last is None or slot > last:
        row.last_slot = slot
    row.last_outcome, row.updated_at = outcome, now


def history(entry: str, limit: int = 20) -> list[dict[str, Any]]:
    """The last ``limit`` handled slots of ``entry``, newest first."""
    with session() as db:
        query = select(Fire).where(Fire.entry == entry).order_by(Fire.slot.desc()).limit(limit)
        return [
            {
                "entry": row.entry,
                "slot": row.slot.isoformat(),
                "sent_at": row.sent_at.isoformat(),
                "lateness_s": round(row.lateness, 3),
                "outcome": row.outcome,
                "message_id": row.message_id,
                "token": row.token,
            }
            for row in db.scalars(query)
        ]


def acquire_lease(name: str, holder: str, ttl: float) -> int | None:
    """Take or renew lease ``name`` for ``holder`` for ``ttl`` seconds; returns the fencing token,
    or ``None`` if another holder's lease has not expired.

    One conditional UPDATE decides, so two replicas can never both win (on PostgreSQL and on
    SQLite alike). The token grows by one each time the lease changes hands, never on renewal.
    """
    now = datetime.now(UTC)
    expires = now + timedelta(seconds=ttl)
    with session() as db:
        result: CursorResult[Any] = db.execute(  # type: ignore[assignment]
            update(Lease)
            .where(Lease.name == name, (Lease.holder == holder) | (Lease.expires_at < now))
            .values(
                holder=holder,
                expires_at=expires,
                token=case((Lease.holder == holder, Lease.token), else_=Lease.token + 1),
            )
        )
        if result.rowcount:
            return int(db.scalar(select(Lease.token).where(Lease.name == name)) or 0)
        if db.get(Lease, name) is not None:
            return None
    try:  # first start ever: create the row
        with session() as db:
            db.add(Lease(name=name, holder=holder, token=1, expires_at=expires))
    except IntegrityError:  # another replica created it first
        return None
    return 1


def release_lease(name: str, holder: str) -> None:
    """Give up lease ``name`` if ``holder`` holds it (a clean stop: the standby takes over at once)."""
    with session() as db:
        db.execute(
            update(Lease)
            .where(Lease.name == name, Lease.holder == holder)
            .values(expires_at=datetime(1970, 1, 1, tzinfo=UTC))
        )
