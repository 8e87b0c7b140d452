"""Idempotency keys: at most one successful run per key and TTL.

The one module that owns the key store. :mod:`~service.idempotency.keys` derives a message's
key; :class:`~service.idempotency.claims.KeyStore` claims, keeps and releases it in Redis
(:mod:`~service.idempotency.redis_store`) with the database
(:mod:`~service.idempotency.database`) as the durable fallback. The worker reaches it through
:class:`service.middleware.idempotency.Idempotency`; maintenance prunes expired rows through
:func:`prune`.
"""

from __future__ import annotations

from service.idempotency.claims import Claim, KeyStore
from service.idempotency.database import prune
from service.idempotency.keys import SCOPES, STORES, message_key, scope_problem

__all__ = ["SCOPES", "STORES", "Claim", "KeyStore", "message_key", "prune", "scope_problem"]
