"""Idempotency: at most one successful run per idempotency key and TTL.

Guarantees:
  * A message is subject to idempotency when its actor (or policy) sets ``idempotency_scope`` or
    the message carries an ``idempotency_key`` option (scope ``global`` then, unless set). Its
    key is derived by :func:`service.idempotency.message_key`.
  * Before the actor runs, the key is claimed (one Redis script call, shared with the claims of
    other threads made at the same moment; the database when Redis is unavailable or the
    actor's ``idempotency_store`` is ``database``). A message whose key is held
    by another message, running or finished within the TTL, is acked without running: outcome
    ``skipped``, counted in ``callboard_idempotent_duplicates_total{queue,actor}``, logged as
    ``message.duplicate``.
  * After a success the key is kept ``idempotency_ttl`` from the end of the run. In Redis that
    mark is sent within 20 ms, with the other successes of the process, by a thread of its own;
    until then the key is held ``run:``, which already makes other messages duplicates.
  * After a failure (retried or dead-lettered alike) the key is released, only if this message
    still holds it, so the retry, or another message with the key, can run.
  * A claim's holder is the message id: a message whose worker was killed mid-run comes back with
    the same id (rescue, hand-back) and claims its own key again; a copy of a message that already
    succeeded is a duplicate.
  * A scope ``user`` / ``tenant`` message without its ``user_id`` / ``tenant_id`` option is
    dead-lettered with reason ``bad_options`` (``message.rejected``); ``service.send`` refuses it
    before sending.
  * If the claim cannot be made at all (Redis and the database both unavailable), the attempt
    fails and is retried: nothing runs unclaimed, nothing is dropped.

Not to be confused with the actor option ``idempotent=True``, which only declares an actor safe to
run twice (the scheduler's validation reads it) and turns nothing on.

Options (message → actor → policy):
  idempotency_key(str): the key; unset: derived from the actor and its arguments.
  idempotency_scope(str): ``global``, ``user`` or ``tenant``. Defaults to the policy's (none).
  idempotency_ttl(int): milliseconds a key is kept after a success. Defaults to the policy's
    ``idempotency_ttl`` (1 day).
  idempotency_store(str): ``redis`` (with the database as fallback) or ``database``.
    Defaults to ``redis``.
  user_id / tenant_id(str | int): the namespace of scope ``user`` / ``tenant`` keys.

Parameters:
  redis_timeout(float): seconds a Redis claim may take before the database is used.
    Defaults to ``CALLBOARD_IDEMPOTENCY_REDIS_TIMEOUT`` (0.25 s), through the factory.
  failover(float): seconds claims stay on the database after a Redis error.
    Defaults to ``CALLBOARD_IDEMPOTENCY_FAILOVER`` (5 s), through the factory.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis
from dramatiq import Broker, Middleware
from dramatiq.middleware import SkipMessage
from sqlalchemy.exc import SQLAlchemyError

from config.policies import DEFAULT_POLICY
from config.settings import get_settings
from service import intake
from service.idempotency import Claim, KeyStore, message_key
from service.logs import log_event
from service.metrics import definitions as m
from service.middleware.metrics import actor_label
from service.middleware.options import option
from service.middleware.outcomes import mark_skipped
from service.middleware.validation import reject
from service.state import state_client

logger = logging.getLogger(__name__)

_CLAIM = "_callboard_idempotency_claim"


class Idempotency(Middleware):
    """Claim each keyed message's idempotency key before it runs; skip duplicates."""

    def __init__(self, *, redis_timeout: float = 0.25, failover: float = 5.0) -> None:
        self.redis_timeout = redis_timeout
        self.failover = failover
        self._store: KeyStore | None = None
        self._deferring = False  # successes batched (see _settle); set with the store
        self._lock = threading.Lock()

    @property
    def actor_options(self) -> set[str]:
        return {"idempotency_scope", "idempotency_ttl", "idempotency_store"}

    def before_process_message(self, broker: Broker, message: Any) -> None:
        scope = option(broker, message, "idempotency_scope")
        if scope is None and message.options.get("idempotency_key") is None:
            return
        try:
            key = message_key(message.actor_name, message.args, message.kwargs, message.options, scope)
        except ValueError as error:
            reject(message, intake.BadOptions(str(error), message))
        ttl = option(broker, message, "idempotency_ttl", DEFAULT_POLICY.idempotency_ttl * 1000) / 1000
        store = option(broker, message, "idempotency_store", "redis")
        claim = self.store(broker).claim(key, message.message_id, message.actor_name, ttl, store)
        if claim is None:
            m.IDEMPOTENT_DUPLICATES.labels(message.queue_name, actor_label(broker, message.actor_name)).inc()
            log_event(logger, logging.INFO, "message.duplicate", scope=scope or "global")
            mark_skipped(message, "skipped")
            raise SkipMessage()
        message.__dict__[_CLAIM] = claim

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        claim: Claim | None = message.__dict__.pop(_CLAIM, None)
        if claim is not None:
            self._settle(broker, claim, success=exception is None)

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        claim: Claim | None = message.__dict__.pop(_CLAIM, None)
        if claim is not None:  # skipped by a later middleware: it did not run, free the key
            self._settle(broker, claim, success=False)

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        if self._store is not None:
            self._store.flush()

    def store(self, broker: Broker) -> KeyStore:
        """This process's key store (built on first use, on the state Redis and the database)."""
        if self._store is not None:  # every keyed message asks: no lock once it is built
            return self._store
        with self._lock:
            if self._store is None:
                client = state_client(broker, get_settings(), timeout=self.redis_timeout)
                store = KeyStore(client, failover=self.failover)
                hooks = getattr(broker, "before_ack_flush", None)
                if hooks is not None:  # deferred successes reach Redis before their acks
                    hooks.append(store.flush)
                self._deferring = hooks is not None
                self._store = store
            return self._store

    def _settle(self, broker: Broker, claim: Claim, *, success: bool) -> None:
        try:
            if success:
                # Deferred only where the broker flushes them before it acks (Callboard's Redis
                # broker); elsewhere the ack follows at once, so the success is sent first.
                store = self.store(broker)
                store.succeed(claim, defer=self._deferring)
            else:
                self.store(broker).release(claim)
        except (redis.RedisError, SQLAlchemyError, OSError) as error:
            # The key then lives out its TTL; this message's retry still re-claims it (same id).
            log_event(
                logger,
                logging.WARNING,
                "idempotency.settle_failed",
                success=success,
                stores=",".join(claim.stores),
                error=str(error),
            )
