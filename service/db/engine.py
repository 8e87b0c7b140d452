"""Engine and session factory, one engine per URL per process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings, get_settings

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def database_url(settings: Settings | None = None) -> str:
    """``CALLBOARD_DATABASE_URL``, or SQLite at ``<data_dir>/callboard.db``."""
    settings = settings or get_settings()
    if settings.database_url:
        return settings.database_url
    return f"sqlite:///{Path(settings.data_dir).absolute() / 'callboard.db'}"


def get_engine(url: str | None = None) -> Engine:
    """The engine for ``url`` (default: :func:`database_url`), created once per process."""
    url = url or database_url()
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
                engine = create_engine(url, connect_args={"timeout": 30})
            else:
                # values_plus_batch: bulk UPDATEs (requeue) go in batches, not one statement a row.
                options: dict[str, Any] = {}
                if "+psycopg2" in url:
                    # A database that does not answer must fail a connect in seconds, not hang
                    # a health probe or a mover pass for the kernel's TCP timeout.
                    options = {
                        "executemany_mode": "values_plus_batch",
                        "connect_args": {"connect_timeout": 5},
                    }
                engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, **options)
            _engines[url] = engine
        return engine


@contextmanager
def session(url: str | None = None) -> Iterator[Session]:
    """A session that commits on success, rolls back on error and always closes."""
    factory = sessionmaker(bind=get_engine(url), expire_on_commit=False)
    db = factory()
    try:
        yield db
        db.commit()
    except BaseException:
        db.rollback()
        raise
    finally:
        db.close()


def dispose_engines() -> None:
    """Close every pooled connection (after fork, and in tests)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
