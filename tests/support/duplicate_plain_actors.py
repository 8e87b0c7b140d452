"""A plain-Dramatiq user module that reuses the shipped ``ping``'s name (for the duplicate check;
never loaded by workers)."""

from __future__ import annotations

import dramatiq


@dramatiq.actor(actor_name="ping")
def another_ping() -> None:
    """Clashes with the shipped ``ping``."""
