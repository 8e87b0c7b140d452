"""Notification actors: alerts (and, with the notify work, email and webhooks)."""

from actors.notifications import alerts as alerts
