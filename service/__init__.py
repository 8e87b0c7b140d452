"""Callboard's runtime: the Python API that producers and actor modules use.

>>> from service import actor, send, send_many
"""

from __future__ import annotations

from service.actors import actor
from service.middleware.time_limits import HardTimeLimitExceeded, SoftTimeLimitExceeded
from service.sending import send, send_many

__all__ = ["HardTimeLimitExceeded", "SoftTimeLimitExceeded", "actor", "send", "send_many"]
