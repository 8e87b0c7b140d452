"""Notification actors: ``send_email`` (SMTP) and ``send_webhook`` (signed HTTP POST).

Importing the package registers every actor; one submodule per channel, imported one per line.
"""

from __future__ import annotations

from actors.notifications import email as email
from actors.notifications import webhooks as webhooks
