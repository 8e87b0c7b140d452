"""Callboard's runtime: the Python API that producers and actor modules use.

>>> from service import actor, send, send_many, progress, status, run_sync
"""

from __future__ import annotations

from service.actors import actor
from service.aio import run_sync
from service.middleware.time_limits import HardTimeLimitExceeded, SoftTimeLimitExceeded
from service.sending import send, send_many
from service.status import progress, status

__all__ = [
    "HardTimeLimitExceeded",
    "SoftTimeLimitExceeded",
    "actor",
    "progress",
    "run_sync",
    "send",
    "send_many",
    "status",
]
