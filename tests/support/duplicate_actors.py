"""A user module that declares an actor name the shipped ``ping`` already has (for the
``callboard actors`` duplicate check; never loaded by workers)."""

from __future__ import annotations

from service import actor


@actor(actor_name="ping", policy="critical")
def another_ping() -> None:
    """Shadows the shipped ``ping``: only the last declaration of a name runs."""
