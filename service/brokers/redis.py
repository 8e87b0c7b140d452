"""Dramatiq's Redis broker with what Callboard adds on top of it.

* Idle consumers block on a wake-up event instead of sleeping (:mod:`service.brokers.wakeup`);
  a consumer whose prefetch is full waits for an ack instead of polling Redis.
* Acks are batched: a worker thread records its ack and the consumer thread sends the batch with
  its next fetch, in one script call (Dramatiq sends one script call per ack from each worker
  thread). A process killed in between leaves those messages unacked: they run again.
* :meth:`CallboardRedisBroker.enqueue_many` pushes a batch in one pipelined round trip.
* Consumers honour :mod:`service.brokers.disposition` (requeue instead of ack, or skip the ack of
  a message already handed back), and :meth:`hand_back_unacked` returns everything this process
  still holds to its queues.

Keys stay in Dramatiq's namespace (``dramatiq:<queue>``, ``.DQ``, ``.XQ``).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import redis
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import current_millis, dq_name
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from config.settings import get_settings
from service import intake
from service.brokers.disposition import Disposition, disposition_of
from service.brokers.proxy import expose_fields
from service.brokers.stats import QueueStats
from service.brokers.wakeup import NOTIFY_BELOW, NOTIFY_SCRIPT, WakeUps
from service.deadletters.capture import DeadEntry, dead_body, log_rejected, rejected_body
from service.idempotency.redis_store import CLAIM_FUNCTION, SUCCEED_FUNCTION
from service.logs import log_event

logger = logging.getLogger(__name__)

#: Seconds between a stopping consumer's polls (it must notice quickly that it should stop).
SHUTDOWN_POLL = 0.05

#: How long Redis keeps a dead letter the mover has not stored (a year: the database was down).
DEAD_MESSAGE_TTL_MS = 365 * 86400 * 1000

#: Seconds to connect to Redis, and to wait for a reply to one command (every command is a short
#: script: nothing blocks server-side).
CONNECT_TIMEOUT = 5.0
COMMAND_TIMEOUT = 10.0

#: Messages per bulk-enqueue script call (Lua's unpack() has a stack limit near 8 000).
BULK_CHUNK = 1000

#: Requeue ids of a consumer's ack set that its process does not hold (see ``_reclaim``): each
#: id only if it is still in the set (an ack or a requeue may have won), and pushed back only if
#: its body is stored. KEYS: ack set, queue list, queue hash. ARGV: ids. Returns how many went back.
RECLAIM_SCRIPT = """
local moved = 0
for i = 1, #ARGV do
    if redis.call("srem", KEYS[1], ARGV[i]) == 1 and redis.call("hexists", KEYS[3], ARGV[i]) == 1 then
        redis.call("rpush", KEYS[2], ARGV[i])
        moved = moved + 1
    end
end
return moved
"""

#: Enqueue many messages of one queue at once: what Dramatiq's "enqueue" does (store the body,
#: push the id), for N messages in one script call instead of N.
BULK_ENQUEUE_SCRIPT = """
local queue = KEYS[1]
local messages = queue .. ".msgs"
local ids = {}
for i = 1, #ARGV, 2 do
    redis.call("hset", messages, ARGV[i], ARGV[i + 1])
    ids[#ids + 1] = ARGV[i]
end
redis.call("rpush", queue, unpack(ids))
"""

#: Dramatiq's "nack" (move a fetched message to the dead-letter queue) storing the body with its
#: ``dead`` reason instead of the original. KEYS: acks set, queue hash, XQ zset, XQ hash.
#: ARGV: message id, new body, timestamp (ms).
DEAD_NACK_SCRIPT = """
if redis.call("srem", KEYS[1], ARGV[1]) > 0 and redis.call("hexists", KEYS[2], ARGV[1]) == 1 then
    redis.call("zadd", KEYS[3], ARGV[3], ARGV[1])
    redis.call("hset", KEYS[4], ARGV[1], ARGV[2])
    redis.call("hdel", KEYS[2], ARGV[1])
end
"""

#: The oldest ARGV[1] entries of a dead-letter queue with their bodies, skipping entries whose
#: body another mover has already removed. KEYS[1]: the XQ zset (its hash is KEYS[1] .. ".msgs").
READ_DEAD_SCRIPT = """
local ids = redis.call("zrange", KEYS[1], 0, tonumber(ARGV[1]) - 1)
local result = {}
for i = 1, #ids do
    local body = redis.call("hget", KEYS[1] .. ".msgs", ids[i])
    if body then
        result[#result + 1] = ids[i]
        result[#result + 1] = body
    end
end
return result
"""

#: Ack a batch like Dramatiq's "ack" and fetch like its "fetch" (same keys, same heartbeat),
#: returning (id, body, claim) triples. ARGV: timestamp, queue, worker id, fetch count, idempotency
#: key prefix ("" for no fetch claims), fallback flag key, largest body to claim from, number of
#: ids to ack, the ids to ack, then (key, message id, TTL ms) per idempotency success to record
#: (``succeed_key``), before the acks: a message's success reaches Redis with its ack or before.
#: A fetched body carrying a ``callboard_claim`` option ("<key digest> <ttl ms> ...", set by the
#: producer's Idempotency middleware) has its key claimed here for its message id, as the worker's
#: claim would (``claim_key``): claim is 1 or 2 (claimed) or 0 (duplicate); -1 when nothing was
#: claimed. Delay queues claim nothing: their messages only move to their queue.
ACK_FETCH_SCRIPT = (
    CLAIM_FUNCTION
    + SUCCEED_FUNCTION
    + """
local namespace = KEYS[1]
local timestamp, queue_name, worker_id, count = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local claim_prefix, claim_flag, claim_limit = ARGV[5], ARGV[6], tonumber(ARGV[7])
local last_ack = 8 + tonumber(ARGV[8])
redis.call("zadd", namespace .. ":__heartbeats__", timestamp, worker_id)
local queue_full_name = namespace .. ":" .. queue_name
local queue_messages = queue_full_name .. ".msgs"
local queue_acks = namespace .. ":__acks__." .. worker_id .. "." .. queue_name
for i = last_ack + 1, #ARGV, 3 do
    succeed_key(ARGV[i], ARGV[i + 1], ARGV[i + 2])
end
for i = 9, last_ack do
    if redis.call("srem", queue_acks, ARGV[i]) > 0 then
        redis.call("hdel", queue_messages, ARGV[i])
    end
end
local ids = {}
for i = 1, count do
    local message_id = redis.call("lpop", queue_full_name)
    if not message_id then
        break
    end
    ids[i] = message_id
    redis.call("sadd", queue_acks, message_id)
end
if #ids == 0 then
    return {}
end
local flag_up = nil  -- the fallback flag, looked at once, when a first key is claimed
local function claim_from(body)
    local ok, message = pcall(cjson.decode, body)
    if not ok or type(message) ~= "table" or type(message.options) ~= "table" then
        return -1
    end
    local spec, message_id = message.options.callboard_claim, message.message_id
    if type(spec) ~= "string" or type(message_id) ~= "string" then
        return -1
    end
    local key, ttl = string.match(spec, "^(%x+) (%d+)")
    if not key or tonumber(ttl) < 1 then
        return -1
    end
    local claimed = claim_key(claim_prefix .. key, "run:" .. message_id, ttl)
    if claimed == 1 then
        if flag_up == nil then
            flag_up = redis.call("exists", claim_flag) == 1
        end
        if flag_up then
            return 2
        end
    end
    return claimed
end
local claiming = claim_prefix ~= "" and string.sub(queue_name, -3) ~= ".DQ"
local bodies = redis.call("hmget", queue_messages, unpack(ids))
local result = {}
for i = 1, #ids do
    local body, claimed = bodies[i], -1
    if claiming and body and #body <= claim_limit and string.find(body, '"callboard_claim"', 1, true) then
        claimed = claim_from(body)
    end
    result[3 * i - 2] = ids[i]
    result[3 * i - 1] = body
    result[3 * i] = claimed
end
return result
"""
)


#: Where the consumer puts a fetched message's claim outcome (1, 2 or 0, see ``ACK_FETCH_SCRIPT``)
#: on its proxy, for the Idempotency middleware to adopt.
FETCH_CLAIM = "_callboard_fetch_claim"


@dataclass(frozen=True, slots=True)
class FetchClaims:
    """How fetches claim idempotency keys (set by the Idempotency middleware at worker boot).

    ``prefix``: of the key names; ``flag``: the database-fallback flag key; ``release(body)``:
    frees the claim a fetched body made, for a body that will not run (refused at intake).
    """

    prefix: str
    flag: str
    release: Callable[[bytes], None]


@dataclass(frozen=True, slots=True)
class Acks:
    """What a consumer sends with its next fetch: Redis ids to ack, and idempotency successes
    (flat key, message id, TTL ms; see :meth:`CallboardRedisBroker.succeed_with_ack`)."""

    ids: list[str]
    successes: list[str | int]

    def __bool__(self) -> bool:
        return bool(self.ids or self.successes)


class CallboardRedisBroker(RedisBroker):
    """A :class:`dramatiq.brokers.redis.RedisBroker` with wake-ups, bulk enqueue and hand-back.

    Parameters:
      url(str): the Redis URL (``redis://``, ``rediss://``, ``unix://``).
      middleware(list): the middleware stack.
      **options: passed to :class:`RedisBroker` (namespace, heartbeat_timeout, ...).
    """

    def __init__(self, *, url: str, middleware: list[Any] | None = None, **options: Any) -> None:
        # Dead letters leave Redis when the mover has stored them; the TTL is only a backstop.
        options.setdefault("dead_message_ttl", DEAD_MESSAGE_TTL_MS)
        # The rescuer requeues dead workers' messages on every pass; Dramatiq's random maintenance
        # would also requeue live workers' messages right after an outage longer than the
        # heartbeat timeout (every heartbeat is stale then), and it runs KEYS.
        options.setdefault("maintenance_chance", 0)
        if url and "client" not in options and "connection_pool" not in options:
            # Bounded waits: a broker that hangs (not refusing, just silent) must fail a send or a
            # fetch in seconds, not block it forever. URL query parameters still override these.
            options["connection_pool"] = redis.ConnectionPool.from_url(
                url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=COMMAND_TIMEOUT
            )
        pooled = "connection_pool" in options or "client" in options
        super().__init__(url=None if pooled else url, middleware=middleware, **options)
        self.wakeups = WakeUps(self.client, self.namespace + ":callboard.wakeup")
        self._notify = self.client.register_script(NOTIFY_SCRIPT)
        self._ack_fetch = self.client.register_script(ACK_FETCH_SCRIPT)
        self._read_dead = self.client.register_script(READ_DEAD_SCRIPT)
        self._dead_nack = self.client.register_script(DEAD_NACK_SCRIPT)
        self._bulk_enqueue = self.client.register_script(BULK_ENQUEUE_SCRIPT)
        self._reclaim_ids = self.client.register_script(RECLAIM_SCRIPT)
        self.stopping = threading.Event()
        self._consumers: weakref.WeakSet[_CallboardRedisConsumer] = weakref.WeakSet()
        # Acks waiting for their queue's consumer thread; kept here, not in a consumer, so a
        # consumer restarted after a connection error still sends its predecessor's acks.
        self._pending_acks: dict[str, list[str]] = {}
        # Idempotency successes sent with their queue's next acks: flat (key, message id, TTL ms).
        self._pending_successes: dict[str, list[str | int]] = {}
        # Redis ids handed to this process's threads and not yet acked, requeued or dead-lettered,
        # per queue: what a restarted consumer must not reclaim (see _reclaim).
        self._held: dict[str, set[str]] = {}
        self._acks_lock = threading.Lock()
        #: Called before acks are sent: what must reach Redis before a message's ack does
        #: (idempotency's deferred successes), so a crash cannot redeliver a message whose
        #: success was acked but not recorded.
        self.before_ack_flush: list[Callable[[], None]] = []
        #: Set when fetches claim the idempotency keys of the messages they fetch (see
        #: ``ACK_FETCH_SCRIPT``): a keyed message then costs no round trip of its own to claim.
        self.fetch_claims: FetchClaims | None = None
        self._claim_limit = intake.receive_limit(get_settings().max_message_bytes)

    @property
    def consumer_class(self) -> type[Consumer]:
        return _CallboardRedisConsumer

    def enqueue(self, message: Message, *, delay: int | None = None) -> Message:
        """Enqueue one message (Dramatiq's contract) and wake an idle consumer of its queue."""
        return self.enqueue_many([message], delay=delay)[0]

    def enqueue_many(self, messages: list[Message], *, delay: int | None = None) -> list[Message]:
        """Enqueue ``messages`` in one pipelined round trip; returns them as stored.

        Either every message was written or this raises (a pipeline is sent as one request).
        """
        prepared = [self._prepare(message, delay) for message in messages]
        for message in prepared:
            self.emit_before("enqueue", message, delay)
        calls: list[tuple[Script, list[str], list[Any]]] = []
        by_queue: dict[str, list[Message]] = {}
        for message in prepared:
            by_queue.setdefault(message.queue_name, []).append(message)
        for queue_name, batch in by_queue.items():
            if len(batch) == 1:  # Dramatiq's own script: keeps its heartbeat and maintenance
                message = batch[0]
                calls.append(
                    self._dispatch_call(
                        "enqueue", queue_name, message.options["redis_message_id"], message.encode()
                    )
                )
            else:
                for start in range(0, len(batch), BULK_CHUNK):
                    pairs: list[Any] = []
                    for message in batch[start : start + BULK_CHUNK]:
                        pairs += [message.options["redis_message_id"], message.encode()]
                    calls.append((self._bulk_enqueue, [f"{self.namespace}:{queue_name}"], pairs))
            if not queue_name.endswith(".DQ"):
                # Wake idle consumers if the queue holds little more than what we just pushed.
                keys = [f"{self.namespace}:{queue_name}"]
                calls.append(
                    (self._notify, keys, [self.wakeups.channel, queue_name, NOTIFY_BELOW + len(batch)])
                )
        try:
            self._run_scripts(calls)
        except redis.ConnectionError as error:
            raise ConnectionClosed(error) from None
        for message in prepared:
            self.emit_after("enqueue", message, delay)
        return prepared

    def begin_shutdown(self) -> None:
        """End consumers' idle waits now and keep them short: the worker is stopping, and a
        consumer asleep for the idle timeout would hold up every shutdown and recycle."""
        self.stopping.set()
        self.wakeups.wake_all()
        for consumer in list(self._consumers):
            consumer._nudge.set()

    def hand_back_unacked(self) -> int:
        """Requeue every message this broker instance fetched and has not acked; returns the count.

        Called when a worker stops: messages still running past the shutdown timeout go back to
        their queues at once instead of waiting for Dramatiq's heartbeat-based recovery.
        """
        self.flush_acks()  # a finished message must not be handed back to run again
        count = 0
        for queue_name in self.get_declared_queues() | self.get_declared_delay_queues():
            acks_key = f"{self.namespace}:__acks__.{self.broker_id}.{queue_name}"
            ids = [m.decode() if isinstance(m, bytes) else str(m) for m in self.client.smembers(acks_key)]
            if ids:
                self.do_requeue(queue_name, *ids)
                self.wake(queue_name)
                count += len(ids)
        return count

    def wake(self, queue_name: str) -> None:
        """Wake idle consumers of ``queue_name`` in every process (messages were put back)."""
        if not queue_name.endswith(".DQ"):
            self.client.publish(self.wakeups.channel, queue_name)

    def defer_ack(self, queue_name: str, redis_id: str) -> None:
        """Record an ack for ``queue_name``'s consumer thread to send with its next fetch."""
        with self._acks_lock:  # held -> pending in one step, as _reclaim sees them
            self._held.get(queue_name, set()).discard(redis_id)
            self._pending_acks.setdefault(queue_name, []).append(redis_id)

    def succeed_with_ack(self, queue_name: str, key: str, message_id: str, ttl_ms: int) -> None:
        """Keep idempotency key ``key`` as done by ``message_id`` for ``ttl_ms`` (if that
        message's run holds it), in the script call that sends ``queue_name``'s next acks.

        Call it before the message is acked (a middleware's ``after`` hook): its success then
        reaches Redis in the same atomic call as its ack, never after it, and costs no round trip
        of its own.
        """
        with self._acks_lock:
            self._pending_successes.setdefault(queue_name, []).extend((key, message_id, ttl_ms))

    def hold(self, queue_name: str, redis_id: str) -> None:
        """``redis_id`` was handed to this process's threads (the consumer thread calls this)."""
        self._held.setdefault(queue_name, set()).add(redis_id)

    def release(self, queue_name: str, redis_id: str) -> None:
        """``redis_id`` is leaving this process's ack set otherwise than by an ack."""
        with self._acks_lock:
            self._held.get(queue_name, set()).discard(redis_id)

    def reclaim(self, queue_name: str, delayed_ids: set[str] | None = None) -> int:
        """Requeue the ids of this process's ack set for ``queue_name`` that none of its threads
        holds; returns how many went back. Called by each new consumer before its first fetch.

        A fetch whose reply was lost (the connection broke after Redis ran it) leaves its ids in
        the ack set with no thread to run or ack them, and Dramatiq drops a delay-queue consumer's
        in-memory delayed messages when its connection fails: without this, those messages
        would wait until this process dies and the rescuer requeues them. ``delayed_ids``: for a
        delay queue, the ids its consumer thread still holds (they replace what was handed out).
        """
        acks_key = f"{self.namespace}:__acks__.{self.broker_id}.{queue_name}"
        members = {_text(member) for member in self.client.smembers(acks_key)}
        if not members:
            return 0
        with self._acks_lock:
            if delayed_ids is not None:
                self._held[queue_name] = set(delayed_ids)
            kept = self._held.get(queue_name, set()) | set(self._pending_acks.get(queue_name, ()))
        orphans = sorted(members - kept)
        if not orphans:
            return 0
        moved = int(
            self._reclaim_ids(
                keys=[acks_key, f"{self.namespace}:{queue_name}", f"{self.namespace}:{queue_name}.msgs"],
                args=orphans,
            )
        )
        if moved:
            log_event(logger, logging.WARNING, "consumer.reclaimed", queue=queue_name, count=moved)
            self.wake(queue_name)
        return moved

    def take_acks(self, queue_name: str) -> Acks:
        """The acks (and successes) waiting for ``queue_name``, removed from the waiting lists."""
        with self._acks_lock:
            return Acks(self._pending_acks.pop(queue_name, []), self._pending_successes.pop(queue_name, []))

    def restore_acks(self, queue_name: str, acks: Acks) -> None:
        """Put back acks that could not be sent (the connection failed); they go with the next."""
        if acks:
            with self._acks_lock:
                self._pending_acks.setdefault(queue_name, [])[:0] = acks.ids
                self._pending_successes.setdefault(queue_name, [])[:0] = acks.successes

    def ack_and_fetch(self, queue_name: str, acks: Acks, count: int) -> list[tuple[str, bytes | None, int]]:
        """Ack ``acks`` (recording their successes first), then fetch up to ``count`` messages of
        ``queue_name`` as (Redis id, body, claim) triples, in one script call that also beats this
        worker's heartbeat.

        Dramatiq's fetch returns bodies without their ids, so a body that does not decode could
        never be dead-lettered; this script returns both. ``claim`` is the outcome of claiming the
        message's idempotency key with :attr:`fetch_claims` (1 or 2 claimed, 0 duplicate), -1 when
        nothing was claimed.
        """
        if acks.ids:
            for flush in self.before_ack_flush:
                flush()
        if self._should_do_maintenance("fetch"):
            # Maintenance (requeueing dead workers' messages) runs through Dramatiq's script.
            self.do_qsize(queue_name)
        claims = self.fetch_claims
        flat = self._ack_fetch(
            keys=[self.namespace],
            args=[
                current_millis(),
                queue_name,
                self.broker_id,
                min(count, self._max_unpack_size()),
                "" if claims is None else claims.prefix,
                "" if claims is None else claims.flag,
                self._claim_limit,
                len(acks.ids),
                *acks.ids,
                *acks.successes,
            ],
        )
        return [(_text(flat[i]), flat[i + 1], int(flat[i + 2])) for i in range(0, len(flat), 3)]

    def flush_acks(self) -> None:
        """Send every waiting ack now (shutdown, hand-back)."""
        for queue_name in {*self._pending_acks, *self._pending_successes}:
            acks = self.take_acks(queue_name)
            if acks:
                try:
                    self.ack_and_fetch(queue_name, acks, 0)
                except redis.ConnectionError:
                    self.restore_acks(queue_name, acks)
                    raise

    def queue_stats(self, queue_name: str) -> QueueStats:
        """How many messages of ``queue_name`` wait, run, are delayed; the oldest waiting one's age.

        Every stored body stays in ``<queue>.msgs`` until acked, so its size minus the list's
        length counts messages in flight (fetched by a worker), prefetched ones included.
        """
        key = f"{self.namespace}:{queue_name}"
        pipe = self.client.pipeline(transaction=False)
        pipe.llen(key)
        pipe.hlen(f"{key}.msgs")
        pipe.hlen(f"{key}.DQ.msgs")
        pipe.lindex(key, 0)
        waiting, stored, delayed, oldest_id = pipe.execute()
        oldest_age = None
        if oldest_id is not None:
            body = self.client.hget(f"{key}.msgs", oldest_id)
            oldest_age = _age_of(body)
        return QueueStats(queue_name, waiting, max(stored - waiting, 0), delayed, oldest_age)

    def fetch_dead(self, limit: int) -> list[DeadEntry]:
        """Up to ``limit`` entries of the declared queues' dead-letter queues, oldest first.

        Reading removes nothing: :meth:`forget_dead` does, once the entries are stored.
        """
        entries: list[DeadEntry] = []
        for queue_name in sorted(self.get_declared_queues()):
            if len(entries) >= limit:
                break
            # Ids and bodies in one script: another mover may remove entries between two calls,
            # and an id read without its body must not look like an undecodable message.
            flat = self._read_dead(keys=[f"{self.namespace}:{queue_name}.XQ"], args=[limit - len(entries)])
            entries += [DeadEntry(_text(flat[i]), queue_name, flat[i + 1]) for i in range(0, len(flat), 2)]
        return entries

    def forget_dead(self, entries: list[DeadEntry]) -> None:
        """Remove stored ``entries`` from their dead-letter queues."""
        pipe = self.client.pipeline(transaction=False)
        for entry in entries:
            key = f"{self.namespace}:{entry.queue}.XQ"
            pipe.zrem(key, entry.ref)
            pipe.hdel(f"{key}.msgs", entry.ref)
        pipe.execute()

    def release_dead(self, entries: list[DeadEntry]) -> None:
        """Nothing to do: reading a Redis dead-letter queue removes nothing."""

    def _prepare(self, message: Message, delay: int | None) -> Message:
        # Each enqueue needs its own Redis id: a retried message keeps its message id.
        message = message.copy(options={"redis_message_id": str(uuid4())})
        if delay is not None:
            message = message.copy(
                queue_name=dq_name(message.queue_name), options={"eta": current_millis() + delay}
            )
        return message

    def _dispatch_call(
        self, command: str, queue_name: str, *args: Any
    ) -> tuple[Script, list[str], list[Any]]:
        # Same argument layout as RedisBroker._dispatch.
        arguments = [
            command,
            current_millis(),
            queue_name,
            self.broker_id,
            self.heartbeat_timeout,
            self.dead_message_ttl,
            self._should_do_maintenance(command),
            self._max_unpack_size(),
            *args,
        ]
        return self.scripts["dispatch"], [self.namespace], arguments

    def _run_scripts(self, calls: list[tuple[Script, list[str], list[Any]]]) -> None:
        """Run script calls in one pipelined round trip.

        redis-py's pipeline checks ``SCRIPT EXISTS`` before every execute (a second round trip);
        instead we send ``EVALSHA`` straight away and load and rerun only the calls that found
        their script missing (after a Redis restart), so nothing runs twice.
        """
        pipe = self.client.pipeline(transaction=False)
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        results = pipe.execute(raise_on_error=False)
        missing = [
            call for call, result in zip(calls, results, strict=True) if isinstance(result, NoScriptError)
        ]
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, NoScriptError):
                raise result
        if missing:
            for script in {call[0] for call in missing}:
                script.sha = self.client.script_load(script.script)
            self._run_scripts(missing)


def _age_of(body: Any) -> float | None:
    try:
        return max(current_millis() - Message.decode(body).message_timestamp, 0) / 1000 if body else None
    except Exception:  # an undecodable body has no timestamp
        return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class _CallboardRedisConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer, waiting on events instead of sleeping, batching acks,
    honouring dispositions, recording why a message died, and dead-lettering every body that
    :func:`service.intake.accept` refuses (oversized, undecodable, wrong queue, bad options)
    with its reason, so that no body can crash a consumer or worker thread or stay in flight."""

    broker: CallboardRedisBroker

    def __init__(self, broker: CallboardRedisBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)
        self._limit = intake.receive_limit(get_settings().max_message_bytes)
        # Set when there is something to do: a producer's wake-up, an ack, a shutdown.
        self._nudge = threading.Event()
        broker.wakeups.subscribe(queue_name, self._nudge)
        broker._consumers.add(self)
        self._reclaimed = False  # reclaim once, before the first fetch (see broker.reclaim)

    def ack(self, message: MessageProxy) -> None:
        disposition = disposition_of(message)
        if disposition is Disposition.REQUEUE:
            try:
                self.broker.release(self.queue_name, message.options["redis_message_id"])
                self.broker.do_requeue(self.queue_name, message.options["redis_message_id"])
                self.broker.wake(self.queue_name)
            except redis.ConnectionError as error:
                raise ConnectionClosed(error) from None
        elif disposition is not Disposition.RELEASED:
            self.broker.defer_ack(self.queue_name, message.options["redis_message_id"])
        self.queued_message_ids.discard(message.message_id)
        self._nudge.set()

    def nack(self, message: MessageProxy) -> None:
        if disposition_of(message) is Disposition.RELEASED:
            self.queued_message_ids.discard(message.message_id)
        else:
            # The body moves to the dead-letter queue with its reason, where it waits for the
            # store even if the database is down.
            self._move_to_dead(message.options["redis_message_id"], dead_body(message))
            self.queued_message_ids.discard(message.message_id)
        self._nudge.set()

    def _move_to_dead(self, redis_id: str, body: bytes) -> None:
        """Move fetched message ``redis_id`` to the dead-letter queue, stored as ``body``."""
        broker, namespace, queue = self.broker, self.broker.namespace, self.queue_name
        canonical = queue.removesuffix(".DQ")
        broker.release(queue, redis_id)
        try:
            broker._dead_nack(
                keys=[
                    f"{namespace}:__acks__.{broker.broker_id}.{queue}",
                    f"{namespace}:{queue}.msgs",
                    f"{namespace}:{canonical}.XQ",
                    f"{namespace}:{canonical}.XQ.msgs",
                ],
                args=[redis_id, body, current_millis()],
            )
        except redis.ConnectionError as error:
            raise ConnectionClosed(error) from None

    def close(self) -> None:
        """Send this queue's waiting acks before the consumer goes away."""
        acks = self.broker.take_acks(self.queue_name)
        if acks:
            try:
                self.broker.ack_and_fetch(self.queue_name, acks, 0)
            except redis.ConnectionError as error:
                self.broker.restore_acks(self.queue_name, acks)
                raise ConnectionClosed(error) from None
        super().close()

    def _reject(self, redis_id: str, body: bytes, rejected: intake.MessageRejected, claimed: int) -> None:
        """Dead-letter fetched ``body`` with the reason it was refused; nothing runs it, so the
        idempotency key its fetch claimed (if any) is freed."""
        log_rejected(logger, self.queue_name, rejected, redis_id=redis_id)
        self._move_to_dead(redis_id, rejected_body(body, rejected))
        if claimed > 0 and self.broker.fetch_claims is not None:
            self.broker.fetch_claims.release(body)

    def __next__(self) -> MessageProxy | None:
        try:
            while True:
                if self.message_cache:
                    redis_id, data, claimed = self.message_cache.pop(0)
                    if data is None:  # an id whose body is gone (see dramatiq#266)
                        continue
                    try:
                        message = intake.accept(data, self.queue_name, self._limit)
                    except intake.MessageRejected as rejected:  # dead-letter it, keep consuming
                        self._reject(redis_id, data, rejected, claimed)
                        continue
                    # The id it was fetched by is the one to ack, whatever the body claims.
                    message.options["redis_message_id"] = redis_id
                    self.queued_message_ids.add(message.message_id)
                    self.broker.hold(self.queue_name, redis_id)
                    proxy = expose_fields(MessageProxy(message))
                    if claimed >= 0:
                        proxy.__dict__[FETCH_CLAIM] = claimed
                    return proxy

                if not self._reclaimed:
                    self.broker.reclaim(self.queue_name, self._delayed_ids())
                    self._reclaimed = True

                # Clear before looking: an ack or wake-up from now on makes the wait return.
                self._nudge.clear()
                acks = self.broker.take_acks(self.queue_name)
                free = max(self.prefetch - self.outstanding_message_count, 0)
                if acks or free:
                    try:
                        self.message_cache = self.broker.ack_and_fetch(self.queue_name, acks, free)
                    except redis.ConnectionError:
                        self.broker.restore_acks(self.queue_name, acks)
                        raise
                if not self.message_cache:
                    # Nothing to run, or every prefetched message still running: wait for news.
                    self._nudge.wait(self._wait_seconds())
                    return None
        except redis.ConnectionError as error:
            raise ConnectionClosed(error) from None

    def _delayed_ids(self) -> set[str] | None:
        """For a delay queue, the ids its consumer thread (the current one) still holds."""
        delay_queue = getattr(threading.current_thread(), "delay_queue", None)
        if not self.queue_name.endswith(".DQ") or delay_queue is None:
            return None
        return {item.message.options["redis_message_id"] for item in list(delay_queue.queue)}

    def _wait_seconds(self) -> float:
        return SHUTDOWN_POLL if self.broker.stopping.is_set() else self.timeout / 1000
