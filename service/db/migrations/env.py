"""Alembic environment: the URL comes from :func:`service.db.migrate.alembic_config`."""

from __future__ import annotations

from alembic import context

from service.db.engine import get_engine
from service.db.models import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    """Run migrations on one connection, in one transaction."""
    url = context.config.attributes["url"]
    with get_engine(url).connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run_migrations_online()
