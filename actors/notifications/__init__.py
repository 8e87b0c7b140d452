"""Notification actors: ``send_email`` (SMTP), ``send_webhook`` (signed HTTP POST) and
``send_alert`` (deduplicated fan-out to the configured channels).

Importing the package registers every actor; one submodule per channel, imported one per line.
"""

from __future__ import annotations

from actors.notifications import alerts as alerts
from actors.notifications import email as email
from actors.notifications import webhooks as webhooks
