"""Idempotency keys in Redis: one script call to claim, a share of one to settle.

A key's value says who holds it and how far it got: ``run:<message id>`` while that message runs,
``done:<message id>`` once it succeeded. A claim succeeds when the key is free (``SET NX`` with
the TTL) or is held ``run:`` by the same message id: a message whose worker was killed mid-run
comes back (rescue, hand-back) with its id and may run again, while a redelivery of a message
that already succeeded is a duplicate. Settling compares before it writes, so a run never
releases or finishes another's claim.

Scripts are called by their SHA (``EVALSHA``), loaded again if Redis forgot them: redis-py's
``Script`` objects cost a third more CPU a call, and a no-op message pays for every microsecond.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Sequence

import redis
from redis.exceptions import NoScriptError

from service.idempotency.batching import GroupCommit
from service.logs import log_event

logger = logging.getLogger(__name__)

PREFIX = "callboard:idempotency:"

#: While this key exists, claims made in Redis are also made in the database (see
#: :mod:`service.idempotency.claims`): keys claimed there during a Redis outage are still live.
FALLBACK_FLAG = PREFIX + "database-fallback"

#: The claim, as a Lua function that other scripts include (the Redis broker's fetch claims the
#: keys of the messages it fetches with it, see ``CallboardRedisBroker.fetch_claims``). Returns 1
#: (claimed) or 0 (held by another message: a duplicate). A caller then returns 2 instead of 1
#: while the database-fallback flag is up (the database must be checked too); the fetch looks at
#: the flag once for all the messages it claims.
CLAIM_FUNCTION = """
local function claim_key(key, token, ttl)
  if not redis.call('set', key, token, 'NX', 'PX', ttl) then
    if redis.call('get', key) ~= token then return 0 end
    redis.call('pexpire', key, ttl)
  end
  return 1
end
"""

_CLAIM = (
    CLAIM_FUNCTION
    + """
local claimed = claim_key(KEYS[1], ARGV[1], ARGV[2])
if claimed == 1 and redis.call('exists', KEYS[2]) == 1 then return 2 end
return claimed
"""
)

#: A success, as a Lua function that other scripts include (the Redis broker's ack sends the
#: successes of the messages it acks with it). Keeps ``key`` as ``done:<message id>`` for ``ttl``
#: ms if that message's run holds it; returns 1, or 0 if it does not.
SUCCEED_FUNCTION = """
local function succeed_key(key, message_id, ttl)
  if redis.call('get', key) ~= 'run:' .. message_id then return 0 end
  redis.call('set', key, 'done:' .. message_id, 'PX', ttl)
  return 1
end
"""

_SUCCEED = SUCCEED_FUNCTION + "return succeed_key(KEYS[1], ARGV[1], ARGV[2])"

# KEYS: the keys to settle; ARGV: per key, its message id and its TTL in ms.
_SUCCEED_MANY = (
    SUCCEED_FUNCTION
    + """
for i = 1, #KEYS do
  succeed_key(KEYS[i], ARGV[2 * i - 1], ARGV[2 * i])
end
return #KEYS
"""
)

_RELEASE = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('del', KEYS[1])
"""

# Set the flag for at least ARGV[1] ms (never shorten it: another process may need it longer).
_FLAG = """
if redis.call('pttl', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('set', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
"""

_Args = Sequence[str | int]


class RedisKeys:
    """The Redis side of the key store. Every method raises ``redis.RedisError`` when Redis
    cannot be reached in the client's timeout; the caller decides where to go instead."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._claims: GroupCommit[tuple[str, str, float], int] = GroupCommit(self._claim_many)

    def claim(self, key: str, token: str, ttl: float) -> int:
        """Claim ``key`` for message ``token`` for ``ttl`` seconds: 1 claimed, 2 claimed but the
        database fallback flag is up, 0 held by another message (a duplicate).

        Claims of threads that call at the same time share one pipelined round trip.
        """
        return self._claims.call((key, token, ttl))

    def _claim_many(self, claims: Sequence[tuple[str, str, float]]) -> list[int]:
        if len(claims) == 1:
            key, token, ttl = claims[0]
            return [self._run(_CLAIM, [PREFIX + key, FALLBACK_FLAG], [f"run:{token}", ttl_ms(ttl)])]
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            for key, token, ttl in claims:
                pipe.evalsha(_sha(_CLAIM), 2, PREFIX + key, FALLBACK_FLAG, f"run:{token}", ttl_ms(ttl))
            try:
                return [int(result) for result in pipe.execute()]
            except NoScriptError:
                if attempt == 2:
                    raise
                self.client.script_load(_CLAIM)
        raise AssertionError("unreachable")

    def succeed(self, key: str, token: str, ttl: float) -> bool:
        """Keep ``key`` as done by ``token`` for ``ttl`` seconds from now; False if not its claim."""
        return bool(self._run(_SUCCEED, [PREFIX + key], _succeed_args(token, ttl)))

    def succeed_many(self, settled: Sequence[tuple[str, str, float]]) -> None:
        """:meth:`succeed` for each ``(key, token, ttl)``, in one script call."""
        keys: list[str] = []
        args: list[str | int] = []
        for key, token, ttl in settled:
            keys.append(PREFIX + key)
            args.extend(_succeed_args(token, ttl))
        self._run(_SUCCEED_MANY, keys, args)

    def release(self, key: str, token: str) -> bool:
        """Free ``key`` if ``token``'s run holds it; False if it does not (expired, or another's)."""
        return bool(self._run(_RELEASE, [PREFIX + key], [f"run:{token}"]))

    def raise_fallback_flag(self, ttl: float) -> None:
        """Make Redis claims consult the database for the next ``ttl`` seconds."""
        self._run(_FLAG, [FALLBACK_FLAG], [ttl_ms(ttl)])

    def _run(self, script: str, keys: list[str], args: _Args) -> int:
        try:
            result = self.client.evalsha(_sha(script), len(keys), *keys, *args)
        except NoScriptError:  # a restarted or flushed Redis: load it and go on
            self.client.script_load(script)
            result = self.client.evalsha(_sha(script), len(keys), *keys, *args)
        return int(result)  # every script returns an integer


class DeferredSuccesses:
    """Successes to settle in Redis, sent together by a thread of their own every ``interval``.

    A worker thread hands its success over and goes on to its next message; every ``interval``
    (20 ms) the thread sends whatever has gathered in one script call, so a busy worker pays a
    fraction of a round trip per success. Until it is sent a key stays ``run:<message id>``,
    which already makes every other message a duplicate. The broker calls :meth:`flush` before it
    sends acks (``CallboardRedisBroker.before_ack_flush``), so a message's ack never reaches Redis
    before its success does: a crash can redeliver only a message whose success was not acked, and
    that copy finds ``done:`` once the success was sent (only a failed settle leaves ``run:``).
    """

    #: Keys per script call (bounds a call's arguments).
    BATCH = 1000

    def __init__(self, keys: RedisKeys, interval: float = 0.02) -> None:
        self.keys = keys
        self.interval = interval
        self._pending: list[tuple[str, str, float]] = []
        self._lock = threading.Lock()
        # Held from taking a batch until it is sent, so flush() returns only once every success
        # handed over before the call is in Redis (the loop's batch in flight included).
        self._sending = threading.Lock()
        self._thread: threading.Thread | None = None

    def put(self, key: str, token: str, ttl: float) -> None:
        """Settle ``key`` as done by ``token`` within ``interval``."""
        with self._lock:
            self._pending.append((key, token, ttl))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="callboard-idempotency", daemon=True)
                self._thread.start()

    def flush(self) -> None:
        """Send every success handed over so far, and wait for a batch in flight (before acks are
        sent, and at worker shutdown). Cheap when nothing is pending."""
        with self._sending:
            with self._lock:
                batch, self._pending = self._pending, []
            if batch:
                self._send(batch)

    def _loop(self) -> None:
        # Runs while successes keep coming; an idle process has no thread waking up for nothing.
        while True:
            time.sleep(self.interval)
            with self._sending:
                with self._lock:
                    batch, self._pending = self._pending, []
                    if not batch:
                        self._thread = None
                        return
                self._send(batch)

    def _send(self, batch: list[tuple[str, str, float]]) -> None:
        try:
            for start in range(0, len(batch), self.BATCH):
                self.keys.succeed_many(batch[start : start + self.BATCH])
        except redis.RedisError as error:
            # The keys stay run:<id> until their TTL: other messages are still duplicates.
            log_event(
                logger,
                logging.WARNING,
                "idempotency.settle_failed",
                success=True,
                stores="redis",
                error=str(error),
            )


_SHAS: dict[str, str] = {}


def _sha(script: str) -> str:
    sha = _SHAS.get(script)
    if sha is None:
        sha = _SHAS[script] = hashlib.sha1(script.encode()).hexdigest()
    return sha


def _succeed_args(token: str, ttl: float) -> list[str | int]:
    return [token, ttl_ms(ttl)]


def ttl_ms(seconds: float) -> int:
    """``seconds`` as whole milliseconds, at least 1 (Redis refuses a PX of 0)."""
    return max(int(seconds * 1000), 1)
