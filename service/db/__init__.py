"""The database: SQLAlchemy engine and sessions, and Alembic migrations.

PostgreSQL (psycopg2) in production, SQLite under ``CALLBOARD_DATA_DIR`` when
``CALLBOARD_DATABASE_URL`` is unset. Later capabilities add their tables as migrations here.
"""

from service.db.engine import database_url, get_engine, session

__all__ = ["database_url", "get_engine", "session"]
