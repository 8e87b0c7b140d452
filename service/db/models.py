"""SQLAlchemy models. Each store's repository module owns its tables; they share this Base."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    """Declarative base of every Callboard table."""
