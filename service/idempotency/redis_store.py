"""Idempotency keys in Redis: one script call to claim, one to settle.

A key's value says who holds it and how far it got: ``run:<message id>`` while that message runs,
``done:<message id>`` once it succeeded. A claim succeeds when the key is free (``SET NX`` with
the TTL) or is held ``run:`` by the same message id: a message whose worker was killed mid-run
comes back (rescue, hand-back) with its id and may run again, while a redelivery of a message
that already succeeded is a duplicate. Settling compares before it writes, so a run never
releases or finishes another's claim.
"""

from __future__ import annotations

import redis

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


class RedisKeys:
    """The Redis side of the key store. Every method raises ``redis.RedisError`` when Redis
    cannot be reached in the client's timeout; the caller decides where to go instead."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._claim = client.register_script(_CLAIM)
        self._succeed = client.register_script(_SUCCEED)
        self._release = client.register_script(_RELEASE)
        self._flag = client.register_script(_FLAG)

    def claim(self, key: str, token: str, ttl: float) -> int:
        """Claim ``key`` for message ``token`` for ``ttl`` seconds: 1 claimed, 2 claimed but the
        database fallback flag is up, 0 held by another message (a duplicate)."""
        return int(self._claim(keys=[PREFIX + key, FALLBACK_FLAG], args=[f"run:{token}", _ms(ttl)]))

    def succeed(self, key: str, token: str, ttl: float) -> bool:
        """Keep ``key`` as done by ``token`` for ``ttl`` seconds from now; False if not its claim."""
        args: list[str | int] = [f"run:{token}", f"done:{token}", _ms(ttl)]
        return bool(self._succeed(keys=[PREFIX + key], args=args))

    def release(self, key: str, token: str) -> bool:
        """Free ``key`` if ``token``'s run holds it; False if it does not (expired, or another's)."""
        return bool(self._release(keys=[PREFIX + key], args=[f"run:{token}"]))

    def raise_fallback_flag(self, ttl: float) -> None:
        """Make Redis claims consult the database for the next ``ttl`` seconds."""
        self._flag(keys=[FALLBACK_FLAG], args=[_ms(ttl)])


def _ms(seconds: float) -> int:
    return max(int(seconds * 1000), 1)
