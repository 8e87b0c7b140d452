"""Operator alerts (``send_alert``): channel messages, the dedupe store, and the dispatch that joins
them. Not to be confused with :mod:`service.deadletters.alerts`, the rate-limited notice sent when
messages are dead-lettered (which :func:`actors.notifications.alerts.dead_letter_alert` turns into
an alert here)."""
