"""A stand-in ``send_alert`` actor with the real one's signature, so the tests prove the chain
from a breaker's transition to one alert each (the real actor replaces it at merge)."""

from __future__ import annotations

from service import actor
from tests.support.actors import QUEUE
from tests.support.records import record


@actor(queue_name=QUEUE, max_retries=0)
def send_alert(level: str, title: str, details: str, dedupe_key: str | None = None) -> None:
    """Record the alert under the tag ``alerts``."""
    record("alerts", "alert", level=level, title=title, details=details, dedupe_key=dedupe_key)
