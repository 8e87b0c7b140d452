"""Fetched messages as the worker sees them: Dramatiq's ``MessageProxy``, its message's fields at hand.

Dramatiq's ``MessageProxy`` reaches every field of its message through ``__getattr__``, which
Python calls only after an ordinary lookup has failed: about 0.5 µs a read, and the middleware
of one message read its fields dozens of times. A message is a frozen dataclass, so its fields
never change: copied into the proxy's own attributes once, at fetch, a read costs what any
attribute read costs. The message's methods (``copy``, ``asdict``, ...) still go through
``__getattr__``; the proxy's own state (``failed``, the stuffed exception) is untouched.
"""

from __future__ import annotations

from typing import TypeVar

from dramatiq.broker import MessageProxy

P = TypeVar("P", bound=MessageProxy)


def expose_fields(proxy: P) -> P:
    """``proxy`` with its message's fields (``options``, ``message_id``, ...) as its own
    attributes; returns it. The ``options`` dictionary is the message's own, shared as before."""
    vars(proxy).update(vars(proxy._message))
    return proxy
