"""Alert actors: ``send_alert`` fans one alert out to the configured channels, once per dedupe key
and window; ``dead_letter_alert`` turns the dead-letter notice into such an alert.

See ``docs/how-to/notifications-alerts.md``; the work is done in :mod:`service.alerts.dispatch`.
"""

from __future__ import annotations

from typing import Any

from config.settings import get_settings
from service import actor
from service.alerts.channels import AlertLevelError, Details
from service.alerts.dispatch import raise_alert


@actor(policy="critical", throws=(AlertLevelError,))
def send_alert(
    level: str, title: str, details: Details = None, dedupe_key: str | None = None
) -> dict[str, Any]:
    """Send an alert (``level``: ``info``, ``warning`` or ``critical``) to every configured channel
    as separate messages, unless one with the same dedupe key (``dedupe_key``, else level + title,
    normalised) was sent within ``CALLBOARD_ALERT_DEDUPE_WINDOW``.

    Returns ``{"outcome": "sent" | "suppressed", "level", "dedupe", "dedupe_id", "messages"}``.
    A bad level raises :class:`AlertLevelError`, which is not retried.
    """
    return raise_alert(level, title, details, dedupe_key, get_settings())


@actor(policy="critical")
def dead_letter_alert(actor: str, queue: str, reason: str, count: int, dead_letter_id: int) -> dict[str, Any]:
    """The dead-letter notice as a ``warning`` alert: set ``CALLBOARD_DLQ_ALERT_ACTOR=dead_letter_alert``.

    The notice is already rate-limited per actor (``CALLBOARD_DLQ_ALERT_INTERVAL``), so each
    notice is its own alert (keyed by its dead letter): only a redelivered notice is suppressed.
    """
    title = f"{count} message(s) of {actor} dead-lettered on {queue} ({reason})"
    details = {
        "actor": actor,
        "queue": queue,
        "reason": reason,
        "count": count,
        "dead_letter_id": dead_letter_id,
    }
    key = f"dead-letters:{actor}:{dead_letter_id}"
    return raise_alert("warning", title, details, key, get_settings())
