"""``callboard db upgrade``: apply the Alembic migrations to the configured database."""

from __future__ import annotations

import argparse
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from service.db.engine import database_url
from service.db.migrate import upgrade
from service.errors import CallboardError


def register(commands: Any) -> None:
    """Add ``db upgrade`` to the parser."""
    parser = commands.add_parser("db", help="database migrations")
    sub = parser.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    up = sub.add_parser("upgrade", help="migrate the database to the newest revision")
    up.set_defaults(handler=run_upgrade)


def run_upgrade(args: argparse.Namespace) -> int:
    """Upgrade to head and print the revision."""
    try:
        revision = upgrade()
    except SQLAlchemyError as error:
        raise CallboardError(f"database upgrade failed: {str(error).splitlines()[0]}") from None
    url = database_url()
    shown = url.split("@")[-1] if "@" in url else url
    print(f"database at revision {revision} ({shown})")
    return 0
