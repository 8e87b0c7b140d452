"""Message status: where every message is, its progress, and its group's progress.

>>> from service.status import status, progress
>>> status(message_id)["state"]
'succeeded'

Workers record each message's transitions (:mod:`service.middleware.status`) in the state Redis
(:func:`service.state.state_client`), kept ``CALLBOARD_STATUS_TTL`` after the last change.
"""

from service.status.lookup import status
from service.status.records import STATES, TERMINAL_STATES
from service.status.running import progress

__all__ = ["STATES", "TERMINAL_STATES", "progress", "status"]
