"""Raise one alert: validate it, deduplicate it, fan it out to the channels, count and log it.

The dedupe key is claimed before the channel messages are sent and given back if sending fails,
so the retry of a failed ``send_alert`` is not suppressed by its own first attempt. A failure
after some channels were sent makes the retry send those again: a repeat on one channel is
better than a lost alert.
"""

from __future__ import annotations

import logging
from typing import Any

from config.settings import Settings
from service.alerts import channels, dedupe
from service.logs import log_event
from service.metrics.definitions import ALERTS
from service.runtime import get_broker
from service.sending import send
from service.state import state_client_or_none

logger = logging.getLogger(__name__)


def raise_alert(
    level: str, title: str, details: channels.Details, dedupe_key: str | None, settings: Settings
) -> dict[str, Any]:
    """Send an alert to every configured channel unless its dedupe key was claimed within
    ``CALLBOARD_ALERT_DEDUPE_WINDOW``; returns ``outcome`` (``sent`` | ``suppressed``), ``level``,
    ``dedupe`` (how the key was claimed, :data:`service.alerts.dedupe.Claim`), ``dedupe_id`` and,
    when sent, the channel message ids by channel.

    Raises :class:`~service.alerts.channels.AlertLevelError` for an unknown level (before
    anything is claimed or sent), and what :func:`service.send` raises when a channel message
    cannot be sent (the key is given back first).
    """
    level = channels.check_level(level)
    title, details = channels.redacted(str(title), details, settings)
    key = dedupe.dedupe_key(level, title, dedupe_key)
    client = state_client_or_none(get_broker(), settings)
    claimed = dedupe.claim(client, key, settings.alert_dedupe_window)
    result: dict[str, Any] = {"level": level, "dedupe": claimed, "dedupe_id": dedupe.key_id(key)[:12]}
    if claimed == "repeat":
        ALERTS.labels(level, "suppressed").inc()
        log_event(
            logger,
            logging.INFO,
            "alert.suppressed",
            alert_level=level,
            title=title,
            dedupe_id=result["dedupe_id"],
            window_s=settings.alert_dedupe_window,
        )
        return {"outcome": "suppressed", **result}
    messages = channels.channel_messages(level, title, details, key, settings)
    sent: dict[str, list[str]] = {}
    try:
        for message in messages:
            sent.setdefault(message.channel, []).append(send(message.actor, kwargs=message.kwargs))
    except Exception:
        dedupe.release(client if claimed == "first" else None, key)
        raise
    ALERTS.labels(level, "sent").inc()
    log_event(
        logger,
        logging.WARNING if claimed == "unavailable" else logging.INFO,
        "alert.sent",
        alert_level=level,
        title=title,
        dedupe_id=result["dedupe_id"],
        dedupe=claimed,
        channels={channel: len(ids) for channel, ids in sent.items()},
    )
    return {"outcome": "sent", **result, "messages": sent}
