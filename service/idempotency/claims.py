"""The key store every caller uses: Redis first, the database when Redis is unreachable.

``claim`` returns a :class:`Claim` (this message may run) or ``None`` (a duplicate); ``succeed``
keeps the key for its TTL, ``release`` frees it so a retry can run. A Redis error (connection,
timeout: bounded by the client's short timeout) sends the claim to the database and keeps
claims there for ``failover`` seconds before Redis is tried again, so an outage costs one timeout
per window, not one per message. Keys claimed in the database during an outage would be
invisible to Redis afterwards, so the first process back on Redis raises a flag there for the
longest TTL it claimed with; while the flag is up, Redis claims are made in the database too.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import NamedTuple

import redis

from service.idempotency import database
from service.idempotency.keys import Store
from service.idempotency.redis_store import DeferredSuccesses, RedisKeys
from service.logs import log_event
from service.metrics import definitions as m

logger = logging.getLogger(__name__)


class Claim(NamedTuple):
    """A key held by one message, in the stores that hold it (a tuple: one is made per keyed
    message, and a frozen dataclass costs several times as much to build)."""

    key: str
    token: str
    ttl: float
    stores: tuple[Store, ...]


class KeyStore:
    """Claims, keeps and releases idempotency keys.

    Parameters:
      client(redis.Redis | None): the state Redis, with a short timeout; ``None``: database only.
      database_url(str | None): the database; ``None``: ``CALLBOARD_DATABASE_URL``.
      failover(float): seconds claims stay on the database after a Redis error. Defaults to 5.
    """

    def __init__(
        self, client: redis.Redis | None, *, database_url: str | None = None, failover: float = 5.0
    ) -> None:
        self.redis = RedisKeys(client) if client is not None else None
        self._deferred = DeferredSuccesses(self.redis) if self.redis is not None else None
        self.database_url = database_url
        self.failover = failover
        self._lock = threading.Lock()
        self._redis_down_until = 0.0
        self._flag_until = 0.0  # monotonic time until which our database claims stay live

    def claim(self, key: str, token: str, actor: str, ttl: float, store: Store = "redis") -> Claim | None:
        """Claim ``key`` for message id ``token``; ``None`` if another message holds it.

        Raises the database's error when the claim needs the database and it fails (the
        attempt then fails and is retried: nothing runs unclaimed).
        """
        if store == "redis" and self.redis is not None and time.monotonic() >= self._redis_down_until:
            try:
                self._raise_flag_if_owed()
                outcome = self.redis.claim(key, token, ttl)
            except redis.RedisError as error:
                self._redis_failed(error)
            else:
                return self._claimed_in_redis(outcome, key, token, actor, ttl)
        if not database.claim(key, token, actor, ttl, self.database_url):
            return None
        if store == "redis" and self.redis is not None:
            with self._lock:
                self._flag_until = max(self._flag_until, time.monotonic() + ttl)
            m.IDEMPOTENCY_FALLBACKS.inc()
        return Claim(key, token, ttl, ("database",))

    def adopt(self, outcome: int, key: str, token: str, actor: str, ttl: float) -> Claim | None:
        """The claim that a Redis fetch already made for ``key`` (``outcome`` 1 or 2: claimed,
        0: a duplicate; see ``CallboardRedisBroker.fetch_claims``), finished as :meth:`claim`
        would: checked in the database too when the fallback flag was up, or when this process
        made database claims that Redis has not yet been told of.

        Raises the database's error when the database check fails.
        """
        if outcome == 1 and not self._flag_until:
            return Claim(key, token, ttl, ("redis",))  # the common case, without further calls
        if outcome == 1:
            try:
                self._raise_flag_if_owed()
            except redis.RedisError as error:
                self._redis_failed(error)
            outcome = 2  # our own database claims may hold this key
        return self._claimed_in_redis(outcome, key, token, actor, ttl)

    def _claimed_in_redis(self, outcome: int, key: str, token: str, actor: str, ttl: float) -> Claim | None:
        if outcome == 0:
            return None
        if outcome == 1:
            return Claim(key, token, ttl, ("redis",))
        if database.claim(key, token, actor, ttl, self.database_url):
            return Claim(key, token, ttl, ("redis", "database"))
        self._release_quietly(Claim(key, token, ttl, ("redis",)))
        return None

    def succeed(self, claim: Claim, *, defer: bool = False) -> None:
        """Keep ``claim``'s key as done for its TTL from now, in every store that holds it.

        With ``defer``, the Redis side is sent by a background thread in a batch with other
        successes (see :class:`~service.idempotency.redis_store.DeferredSuccesses`); call
        :meth:`flush` before the process exits.
        """
        for store in claim.stores:
            if store == "redis" and self._deferred is not None and defer:
                self._deferred.put(claim.key, claim.token, claim.ttl)
            elif store == "redis" and self.redis is not None:
                self.redis.succeed(claim.key, claim.token, claim.ttl)
            elif store == "database":
                database.succeed(claim.key, claim.token, claim.ttl, self.database_url)

    def flush(self) -> None:
        """Send the deferred successes now."""
        if self._deferred is not None:
            self._deferred.flush()

    def release(self, claim: Claim) -> None:
        """Free ``claim``'s key (only if this message still holds it) in every store."""
        for store in claim.stores:
            if store == "redis" and self.redis is not None:
                self.redis.release(claim.key, claim.token)
            elif store == "database":
                database.release(claim.key, claim.token, self.database_url)

    def _redis_failed(self, error: redis.RedisError) -> None:
        with self._lock:
            first = time.monotonic() >= self._redis_down_until
            self._redis_down_until = time.monotonic() + self.failover
        if first:
            log_event(
                logger,
                logging.WARNING,
                "idempotency.redis_unavailable",
                error=str(error),
                failover_s=self.failover,
            )

    def _raise_flag_if_owed(self) -> None:
        if not self._flag_until:  # the usual case: no outage to tell Redis about
            return
        with self._lock:
            remaining = self._flag_until - time.monotonic()
        if remaining <= 0:
            return
        assert self.redis is not None
        self.redis.raise_fallback_flag(remaining)
        with self._lock:
            self._flag_until = 0.0
        log_event(logger, logging.INFO, "idempotency.redis_recovered", database_checks_s=round(remaining))

    def _release_quietly(self, claim: Claim) -> None:
        # On failure the key expires by itself; this message is a duplicate either way.
        with contextlib.suppress(redis.RedisError):
            self.release(claim)
