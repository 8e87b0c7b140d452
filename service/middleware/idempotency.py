"""Idempotency: at most one successful run per idempotency key and TTL.

Guarantees:
  * A message is subject to idempotency when its actor (or policy) sets ``idempotency_scope`` or
    the message carries an ``idempotency_key`` option (scope ``global`` then, unless set). Its
    key is derived by :func:`service.idempotency.message_key`.
  * Before the actor runs, the key is claimed (one Redis script call, shared with the claims of
    other threads made at the same moment; the database when Redis is unavailable or the
    actor's ``idempotency_store`` is ``database``). On Callboard's Redis broker, when the state
    Redis is the broker's, the producer writes the key into the message (option
    ``callboard_claim``: "<digest> <ttl ms> <derivation>") and the worker's fetch claims it in the
    same script call that fetches the message, so the worker makes no call of its own. The worker
    uses the fetch's claim as it is when the producer derived the key as it would (same
    derivation version and scope: ``k1.global``), else derives the key again and uses the claim
    only if the two agree. A message whose key is held
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
  callboard_claim(str): written by the producer's ``before_enqueue`` (see above); not for senders.

Parameters:
  redis_timeout(float): seconds a Redis claim may take before the database is used.
    Defaults to ``CALLBOARD_IDEMPOTENCY_REDIS_TIMEOUT`` (0.25 s), through the factory.
  failover(float): seconds claims stay on the database after a Redis error.
    Defaults to ``CALLBOARD_IDEMPOTENCY_FAILOVER`` (5 s), through the factory.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from typing import Any

import redis
from dramatiq import Broker, Middleware, Worker
from dramatiq.middleware import SkipMessage
from sqlalchemy.exc import SQLAlchemyError

from config.policies import DEFAULT_POLICY
from config.settings import get_settings
from service import intake
from service.brokers.redis import FETCH_CLAIM, CallboardRedisBroker, FetchClaims
from service.idempotency import Claim, KeyStore, message_key
from service.idempotency.keys import SCOPES, Store, derivation
from service.idempotency.redis_store import FALLBACK_FLAG, PREFIX, ttl_ms
from service.logs import log_event
from service.metrics import definitions as m
from service.middleware.metrics import actor_label
from service.middleware.options import option
from service.middleware.outcomes import mark_skipped
from service.middleware.validation import reject
from service.state import same_database, state_client

logger = logging.getLogger(__name__)

_CLAIM = "_callboard_idempotency_claim"

#: The message option that carries a key for the fetch to claim: "<digest> <ttl ms>".
CLAIM_OPTION = "callboard_claim"


class Idempotency(Middleware):
    """Claim each keyed message's idempotency key before it runs; skip duplicates."""

    def __init__(self, *, redis_timeout: float = 0.25, failover: float = 5.0) -> None:
        self.redis_timeout = redis_timeout
        self.failover = failover
        self._store: KeyStore | None = None
        self._deferring = False  # successes batched (see _settle); set with the store
        self._on_fetch: bool | None = None  # keys claimed by fetches (see _claims_on_fetch)
        self._by_actor: dict[str, tuple[str | None, float, Store]] = {}  # see _settings
        self._lock = threading.Lock()

    @property
    def actor_options(self) -> set[str]:
        return {"idempotency_scope", "idempotency_ttl", "idempotency_store"}

    def before_worker_boot(self, broker: Broker, worker: Worker) -> None:
        if self._claims_on_fetch(broker):
            assert isinstance(broker, CallboardRedisBroker)
            release = functools.partial(self._release_body_claim, broker)
            broker.fetch_claims = FetchClaims(PREFIX, FALLBACK_FLAG, release)

    def before_enqueue(self, broker: Broker, message: Any, delay: int | None) -> None:
        """Write the key into a keyed message, for the worker's fetch to claim (see above)."""
        if not self._claims_on_fetch(broker):
            return
        options = message.options
        options.pop(CLAIM_OPTION, None)  # a retry's key is derived again
        scope, ttl, store = self._settings(broker, message.actor_name, options)
        if (scope is None and options.get("idempotency_key") is None) or store != "redis":
            return
        try:
            key = message_key(message.actor_name, message.args, message.kwargs, options, scope)
        except ValueError:  # the worker refuses it; service.send refuses it before this
            return
        options[CLAIM_OPTION] = f"{key} {ttl_ms(ttl)} {derivation(scope)}"

    def before_process_message(self, broker: Broker, message: Any) -> None:
        fetched: int | None = message.__dict__.pop(FETCH_CLAIM, None)
        # The message itself: a proxy forwards each attribute read through __getattr__.
        raw = getattr(message, "_message", message)
        options, actor_name = raw.options, raw.actor_name
        scope, ttl, store = self._settings(broker, actor_name, options)
        if scope is None and options.get("idempotency_key") is None:
            if fetched:  # the actor stopped being keyed since it was sent
                self._release_fetched(broker, message)
            return
        # The producer's digest, when it derived it as this worker would (same version, same
        # scope): deriving it again (canonical JSON and SHA-256 of the arguments) is most of
        # what a keyed message costs the worker. Anything else is derived here.
        key = _trusted_key(options, scope) if fetched is not None else None
        trusted = key is not None
        if key is None:
            try:
                key = message_key(actor_name, raw.args, raw.kwargs, options, scope)
            except ValueError as error:
                if fetched:
                    self._release_fetched(broker, message)
                reject(message, intake.BadOptions(str(error), message))
        keys = self.store(broker)
        if fetched is not None and store == "redis" and (trusted or _claimed_key(options) == key):
            claim = keys.adopt(fetched, key, raw.message_id, actor_name, ttl)
        else:
            if fetched:  # a key that is not this message's (written by another producer's rules)
                self._release_fetched(broker, message)
            claim = keys.claim(key, raw.message_id, actor_name, ttl, store)
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
            self._settle(broker, claim, success=exception is None, queue_name=message.queue_name)
        elif message.__dict__.pop(FETCH_CLAIM, None):  # failed before its claim was adopted
            self._release_fetched(broker, message)

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        claim: Claim | None = message.__dict__.pop(_CLAIM, None)
        if claim is not None:  # skipped by a later middleware: it did not run, free the key
            self._settle(broker, claim, success=False)
        elif message.__dict__.pop(FETCH_CLAIM, None):  # skipped before its claim was adopted
            self._release_fetched(broker, message)

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
                # Deferred successes reach Redis before their acks. Not needed where successes
                # go with the acks themselves (keys in the broker's Redis, see _settle).
                if hooks is not None and not self._claims_on_fetch(broker):
                    hooks.append(store.flush)
                    self._deferring = True
                self._store = store
            return self._store

    def _settings(
        self, broker: Broker, actor_name: str, options: dict[str, Any]
    ) -> tuple[str | None, float, Store]:
        """Scope, TTL (s) and store of a message: its options, then its actor's (cached: every
        message of every actor asks, and looking an actor up costs more than the rest)."""
        defaults = self._by_actor.get(actor_name)
        if defaults is None:
            probe = _Options(actor_name)
            defaults = (
                option(broker, probe, "idempotency_scope"),
                option(broker, probe, "idempotency_ttl", DEFAULT_POLICY.idempotency_ttl * 1000) / 1000,
                option(broker, probe, "idempotency_store", "redis"),
            )
            if actor_name in broker.actors:  # an unknown actor may be declared later
                self._by_actor[actor_name] = defaults
        scope, ttl, store = defaults
        if options.get("idempotency_scope") is not None:
            scope = options["idempotency_scope"]
        if options.get("idempotency_ttl") is not None:
            ttl = options["idempotency_ttl"] / 1000
        if options.get("idempotency_store") is not None:  # checked at intake: a Store
            store = options["idempotency_store"]
        return scope, ttl, store

    def _claims_on_fetch(self, broker: Broker) -> bool:
        # Only where the fetch's Redis is the one that holds the keys (the state Redis).
        if self._on_fetch is None:
            state = state_client(broker, get_settings())
            self._on_fetch = (
                isinstance(broker, CallboardRedisBroker)
                and state is not None
                and same_database(state, broker.client)
            )
        return self._on_fetch

    def _release_fetched(self, broker: Broker, message: Any) -> None:
        """Free the key that ``message``'s fetch claimed and that it will not use."""
        key = _claimed_key(message.options)
        if key is not None:
            self._settle(broker, Claim(key, message.message_id, 0, ("redis",)), success=False)

    def _release_body_claim(self, broker: Broker, body: bytes) -> None:
        """Free the key that the fetch of ``body`` claimed (a body refused at intake)."""
        try:
            fields = json.loads(body)
            key = _claimed_key(fields["options"])
            if key is not None:
                self.store(broker).release(Claim(key, fields["message_id"], 0, ("redis",)))
        except (ValueError, TypeError, KeyError, AttributeError, redis.RedisError) as error:
            # The key then lives out its TTL: other messages with it are skipped meanwhile.
            log_event(logger, logging.WARNING, "idempotency.settle_failed", success=False, error=str(error))

    def _settle(self, broker: Broker, claim: Claim, *, success: bool, queue_name: str = "") -> None:
        try:
            if success:
                on_fetch = self._on_fetch if self._on_fetch is not None else self._claims_on_fetch(broker)
                if queue_name and "redis" in claim.stores and on_fetch:
                    # The keys live in the broker's Redis: the success goes in the script call
                    # that acks the message (no round trip of its own, never after the ack).
                    assert isinstance(broker, CallboardRedisBroker)
                    broker.succeed_with_ack(queue_name, PREFIX + claim.key, claim.token, ttl_ms(claim.ttl))
                    if claim.stores == ("redis",):
                        return
                    claim = claim._replace(stores=tuple(s for s in claim.stores if s != "redis"))
                store = self.store(broker)
                # Deferred only where the broker flushes them before it acks (Callboard's Redis
                # broker); elsewhere the ack follows at once, so the success is sent first.
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


def _claimed_key(options: dict[str, Any]) -> str | None:
    """The key digest that the ``callboard_claim`` option in ``options`` names, if any."""
    spec = options.get(CLAIM_OPTION)
    return spec.partition(" ")[0] if isinstance(spec, str) else None


def _trusted_key(options: dict[str, Any], scope: str | None) -> str | None:
    """The digest of the ``callboard_claim`` option in ``options`` if the producer derived it the
    way this worker derives keys for ``scope`` (:func:`service.idempotency.keys.derivation`).

    A sender able to write this option could as well have set ``idempotency_key``: trusting it
    gives no one a key they could not choose already.
    """
    spec = options.get(CLAIM_OPTION)
    if not isinstance(spec, str):
        return None
    key, _, rest = spec.partition(" ")
    written = rest.partition(" ")[2]
    expected = _DERIVATIONS.get(scope) or derivation(scope)
    return key if written == expected and len(key) == 64 else None


#: What :func:`derivation` gives for each scope (asked for every fetched keyed message).
_DERIVATIONS: dict[str | None, str] = {scope: derivation(scope) for scope in (None, *SCOPES)}


class _Options:
    """A message with no options of its own, to read an actor's option values through option()."""

    __slots__ = ("actor_name", "options")

    def __init__(self, actor_name: str) -> None:
        self.actor_name = actor_name
        self.options: dict[str, Any] = {}
