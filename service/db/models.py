"""SQLAlchemy models' shared parts. Each store's repository module owns its tables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator


class Base(DeclarativeBase):
    """Declarative base of every Callboard table."""


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp that reads back aware on every database (SQLite returns naive
    values; every time Callboard stores is UTC), so no caller has to patch the zone."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value
