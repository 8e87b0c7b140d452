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
