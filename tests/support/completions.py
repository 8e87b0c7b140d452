"""The chaos suite's ledger: one row per message key in the test's database, counting its runs.

Actors in worker processes call :func:`complete` (``CALLBOARD_TEST_COMPLETIONS_URL`` names the
database); tests read :func:`ledger` and :func:`check` the set they sent: every key completed at
least once, none missing, and how many ran more than once (at-least-once allows it; an
idempotent actor must not).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import sqlalchemy
from sqlalchemy import Engine, text

URL_VARIABLE = "CALLBOARD_TEST_COMPLETIONS_URL"
TABLE = "chaos_completions"

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def _engine(url: str) -> Engine:
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            args = {"timeout": 30} if url.startswith("sqlite") else {"connect_timeout": 5}
            engine = _engines[url] = sqlalchemy.create_engine(url, connect_args=args, pool_pre_ping=True)
        return engine


def create(url: str) -> None:
    """Create the ledger table (unique on the message key) in the database at ``url``."""
    with _engine(url).begin() as connection:
        connection.execute(
            text(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (message_key VARCHAR(200) PRIMARY KEY, "
                "runs INTEGER NOT NULL, pid INTEGER, first_at FLOAT, last_at FLOAT)"
            )
        )


def complete(key: str, url: str | None = None) -> None:
    """Count one completed run of ``key`` (raises if the database is unreachable: the actor's
    attempt then fails and is retried, as a real actor's would)."""
    now = time.time()
    with _engine(url or os.environ[URL_VARIABLE]).begin() as connection:
        connection.execute(
            text(
                f"INSERT INTO {TABLE} (message_key, runs, pid, first_at, last_at) "
                "VALUES (:key, 1, :pid, :now, :now) ON CONFLICT (message_key) "
                f"DO UPDATE SET runs = {TABLE}.runs + 1, last_at = :now"
            ),
            {"key": key, "pid": os.getpid(), "now": now},
        )


def ledger(url: str) -> dict[str, int]:
    """Runs per completed key."""
    with _engine(url).connect() as connection:
        return {key: runs for key, runs in connection.execute(text(f"SELECT message_key, runs FROM {TABLE}"))}


@dataclass(frozen=True, slots=True)
class Verdict:
    """What became of a known set of keys."""

    completed: int
    missing: list[str]
    duplicated: dict[str, int]  # key -> runs, for keys that ran more than once


def check(url: str, keys: list[str]) -> Verdict:
    """Compare the ledger with the keys that were sent."""
    runs = ledger(url)
    missing = [key for key in keys if key not in runs]
    duplicated = {key: count for key, count in runs.items() if count > 1}
    return Verdict(completed=len(keys) - len(missing), missing=missing, duplicated=duplicated)


def dispose() -> None:
    """Close every pooled connection (at the end of a test)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
