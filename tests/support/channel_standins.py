"""Stand-ins for the channel actors ``send_email`` (actors/notifications/email.py) and
``send_webhook`` (actors/notifications/webhooks.py), which the notify work ships on its own branch:
same names, signatures and policies, and they only record their run (under the tag ``channels``)
so alert tests can count what reached each channel. Replaced by the real actors at merge.

Loaded with ``CALLBOARD_ACTOR_MODULES=tests.support.channel_standins``.
"""

from __future__ import annotations

from typing import Any

from service import actor
from tests.support.records import record

#: The record tag every stand-in run is appended to.
TAG = "channels"


@actor(policy="email")
def send_email(
    to: list[str],
    subject: str,
    body: str,
    html: str | None = None,
    cc: list[str] | None = None,
    reply_to: str | None = None,
) -> None:
    """Record ``email`` with the recipients and subject."""
    record(TAG, "email", to=to, subject=subject, body=body)


@actor(policy="external_api")
def send_webhook(
    url: str, payload: dict[str, Any], headers: dict[str, str] | None = None, timeout: float | None = None
) -> None:
    """Record ``webhook`` with the URL and payload."""
    record(TAG, "webhook", url=url, payload=payload)
