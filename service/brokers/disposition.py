"""What the consumer does with a message when its worker thread is done with it.

Dramatiq acks a processed message and nacks a failed one. Callboard needs two more outcomes,
set by middleware and honoured by our consumers in place of the ack:

* ``REQUEUE``: put the original back on its queue (a retry could not be re-enqueued, so acking
  would lose the message).
* ``RELEASED``: the message was already handed back to the broker at shutdown; acking now would
  delete the body of a message that is queued again.
"""

from __future__ import annotations

from enum import Enum

from dramatiq.broker import MessageProxy

_ATTRIBUTE = "_callboard_disposition"


class Disposition(Enum):
    """A consumer-side outcome other than Dramatiq's own ack/nack."""

    REQUEUE = "requeue"
    RELEASED = "released"


def mark(message: MessageProxy, disposition: Disposition) -> None:
    """Record ``disposition`` on ``message``; the consumer applies it instead of an ack."""
    setattr(message, _ATTRIBUTE, disposition)


def disposition_of(message: MessageProxy) -> Disposition | None:
    """The disposition recorded on ``message``, or ``None`` for Dramatiq's own ack/nack."""
    return message.__dict__.get(_ATTRIBUTE)
