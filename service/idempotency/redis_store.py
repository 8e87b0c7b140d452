"""Idempotency keys in Redis: one script call to claim, one (batched) to settle.

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
from collections.abc import Sequence

import redis
from redis.exceptions import NoScriptError

from service.logs import log_event

logger = logging.getLogger(__name__)

PREFIX = "callboard:idempotency:"

#: While this key exists, claims made in Redis are also made in the database (see
#: :mod:`service.idempotency.claims`): keys claimed there during a Redis outage are still live.
FALLBACK_FLAG = PREFIX + "database-fallback"

# Returns 1 (claimed), 2 (claimed, and the database must be checked too) or 0 (duplicate).
_CLAIM = """
local claimed = redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
if not claimed then
  if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
  redis.call('pexpire', KEYS[1], ARGV[2])
end
if redis.call('exists', KEYS[2]) == 1 then return 2 end
return 1
"""

_SUCCEED = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""

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

    def claim(self, key: str, token: str, ttl: float) -> int:
        """Claim ``key`` for message ``token`` for ``ttl`` seconds: 1 claimed, 2 claimed but the
        database fallback flag is up, 0 held by another message (a duplicate)."""
        return self._run(_CLAIM, [PREFIX + key, FALLBACK_FLAG], [f"run:{token}", _ms(ttl)])

    def succeed(self, key: str, token: str, ttl: float) -> bool:
        """Keep ``key`` as done by ``token`` for ``ttl`` seconds from now; False if not its claim."""
        return bool(self._run(_SUCCEED, [PREFIX + key], _succeed_args(token, ttl)))

    def succeed_many(self, settled: Sequence[tuple[str, str, float]]) -> None:
        """:meth:`succeed` for each ``(key, token, ttl)``, in one pipelined round trip."""
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            for key, token, ttl in settled:
                pipe.evalsha(_sha(_SUCCEED), 1, PREFIX + key, *_succeed_args(token, ttl))
            try:
                pipe.execute()
                return
            except NoScriptError:
                if attempt == 2:
                    raise
                self.client.script_load(_SUCCEED)

    def release(self, key: str, token: str) -> bool:
        """Free ``key`` if ``token``'s run holds it; False if it does not (expired, or another's)."""
        return bool(self._run(_RELEASE, [PREFIX + key], [f"run:{token}"]))

    def raise_fallback_flag(self, ttl: float) -> None:
        """Make Redis claims consult the database for the next ``ttl`` seconds."""
        self._run(_FLAG, [FALLBACK_FLAG], [_ms(ttl)])

    def _run(self, script: str, keys: list[str], args: _Args) -> int:
        try:
            result = self.client.evalsha(_sha(script), len(keys), *keys, *args)
        except NoScriptError:  # a restarted or flushed Redis: load it and go on
            self.client.script_load(script)
            result = self.client.evalsha(_sha(script), len(keys), *keys, *args)
        return int(result)  # every script returns an integer


class DeferredSuccesses:
    """Successes to settle in Redis, sent in batches by a thread of their own.

    A worker thread hands its success over and goes on to its next message; the thread sends
    whatever has gathered in one pipelined round trip, then waits for more. Until a success is
    sent its key stays ``run:<message id>``, which already makes every other message a
    duplicate; only a redelivery of the same message id in that window (milliseconds, and only
    after a crash) could run again, as after a failed settle.
    """

    def __init__(self, keys: RedisKeys) -> None:
        self.keys = keys
        self._pending: list[tuple[str, str, float]] = []
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None

    def put(self, key: str, token: str, ttl: float) -> None:
        """Settle ``key`` as done by ``token`` soon."""
        with self._ready:
            self._pending.append((key, token, ttl))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="callboard-idempotency", daemon=True)
                self._thread.start()
            self._ready.notify()

    def flush(self) -> None:
        """Send every pending success now (worker shutdown)."""
        with self._ready:
            batch, self._pending = self._pending, []
        self._send(batch)

    def _loop(self) -> None:
        while True:
            with self._ready:
                while not self._pending:
                    self._ready.wait()
                batch, self._pending = self._pending, []
            self._send(batch)

    def _send(self, batch: list[tuple[str, str, float]]) -> None:
        if not batch:
            return
        try:
            self.keys.succeed_many(batch)
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
    return [f"run:{token}", f"done:{token}", _ms(ttl)]


def _ms(seconds: float) -> int:
    return max(int(seconds * 1000), 1)
