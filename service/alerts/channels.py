"""What an alert becomes on each configured channel: one message per channel, for the channel
actors (``send_email`` on the ``email`` policy, ``send_webhook`` on ``external_api``), built here
and sent by name so a slow or failing channel never holds up another.

Channels from settings: ``CALLBOARD_ALERT_EMAILS`` (one ``send_email`` to every address),
``CALLBOARD_ALERT_WEBHOOKS`` (one ``send_webhook`` per URL, JSON below) and
``CALLBOARD_ALERT_SLACK_WEBHOOK`` (one ``send_webhook`` with Slack's ``text`` and ``blocks``).

Every channel gets the title and details with sensitive fields redacted
(``CALLBOARD_SENSITIVE_FIELDS``): a dict's sensitive keys are replaced, free text has
``<sensitive name>=value`` redacted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from config.settings import Settings
from service.errors import BadInputError
from service.redaction import Redactor

#: Alert levels, least severe first.
LEVELS = ("info", "warning", "critical")

#: Longest details text sent to a channel (Slack refuses a section over 3000 characters).
MAX_DETAILS_CHARS = 2900

Details = dict[str, Any] | str | None


class AlertLevelError(BadInputError):
    """The alert level is not one of ``info``, ``warning``, ``critical``."""


@dataclass(frozen=True, slots=True)
class ChannelMessage:
    """One message for a channel actor: ``channel`` is ``email``, ``webhook`` or ``slack``."""

    channel: str
    actor: str
    kwargs: dict[str, Any]


def check_level(level: object) -> str:
    """``level`` lower-cased if it is a known level; raises :class:`AlertLevelError` otherwise."""
    if isinstance(level, str) and level.strip().lower() in LEVELS:
        return level.strip().lower()
    raise AlertLevelError(f"send_alert: level must be one of {', '.join(LEVELS)} (got {level!r})")


def redacted(title: str, details: Details, settings: Settings) -> tuple[str, Details]:
    """``title`` and ``details`` with sensitive fields redacted (see the module docstring)."""
    redactor = Redactor(settings.sensitive_fields)
    if isinstance(details, str):
        details = redactor.redact_text(details)
    elif details is not None:
        details = redactor.redact(details)
    return redactor.redact_text(title), details


def details_text(details: Details) -> str:
    """``details`` as text for people: ``key: value`` lines for a dict, the text itself otherwise."""
    if details is None:
        return ""
    if isinstance(details, str):
        text = details
    else:
        text = "\n".join(f"{key}: {_one_value(value)}" for key, value in details.items())
    return text if len(text) <= MAX_DETAILS_CHARS else text[: MAX_DETAILS_CHARS - 1] + "…"


def channel_messages(
    level: str, title: str, details: Details, key: str, settings: Settings, *, at: datetime | None = None
) -> list[ChannelMessage]:
    """One message per configured channel for an alert (already redacted, see :func:`redacted`)."""
    moment = (at or datetime.now(UTC)).isoformat()
    text = details_text(details)
    messages = []
    if settings.alert_emails:
        body = f"{title}\n\nLevel: {level}\nAt: {moment}\n\n{text}\n".replace("\n\n\n", "\n\n")
        kwargs = {"to": list(settings.alert_emails), "subject": f"[{level.upper()}] {title}", "body": body}
        messages.append(ChannelMessage("email", "send_email", kwargs))
    payload = {
        "source": "callboard",
        "level": level,
        "title": title,
        "details": details,
        "key": key,
        "at": moment,
    }
    for url in settings.alert_webhooks:
        messages.append(ChannelMessage("webhook", "send_webhook", {"url": url, "payload": payload}))
    if settings.alert_slack_webhook is not None:
        slack = {
            "text": f"[{level.upper()}] {title}",
            "blocks": [
                {
                    "type": "header",
                    "text": {"type": "plain_text", "text": f"[{level.upper()}] {title}"[:150]},
                },
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": f"```{text}```" if text else "_no details_"},
                },
                {"type": "context", "elements": [{"type": "mrkdwn", "text": f"Callboard · {moment}"}]},
            ],
        }
        url = settings.alert_slack_webhook.get_secret_value()
        messages.append(ChannelMessage("slack", "send_webhook", {"url": url, "payload": slack}))
    return messages


def _one_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)
