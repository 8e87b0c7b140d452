"""One error tree for Callboard. The CLI maps these classes to exit codes in one place.

Each leaf's docstring is its meaning; ``str(error)`` is the one line a user sees.
"""

from __future__ import annotations


class CallboardError(Exception):
    """Base of every error Callboard raises on purpose."""


class ConfigurationError(CallboardError):
    """Settings, policies or actor declarations are wrong."""


class BadInputError(CallboardError):
    """Input from a user or producer cannot be accepted."""


class UnknownActorError(BadInputError):
    """No actor of that name is registered."""


class BadArgumentsError(BadInputError):
    """The arguments do not fit the actor's signature or cannot be encoded."""


class BrokerUnavailableError(CallboardError):
    """The broker could not be reached; the message was not stored."""


class DeliveryError(CallboardError):
    """A notification (email, webhook) could not be delivered."""


class TemporaryDeliveryError(DeliveryError):
    """Delivery failed for now (a 4xx SMTP reply, a 5xx or 429 HTTP status, a network error);
    a retry may succeed."""


class PermanentDeliveryError(DeliveryError):
    """The destination refused for good (a 5xx SMTP reply, a 4xx HTTP status); never retried."""


class DestinationRefusedError(PermanentDeliveryError):
    """The destination is not allowed: not http(s), or an address the SSRF guard refuses."""


class StatusUnavailableError(CallboardError):
    """Message status cannot be read: no state Redis, or it cannot be reached."""
