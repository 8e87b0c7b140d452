"""Circuit-breaker state in the shared-state Redis, changed only by atomic Lua scripts.

One hash per breaker, ``callboard:breaker:<name>`` (absent means closed with no failures):
``state`` (``closed``, ``open``, ``half_open``), ``failures`` (consecutive, while closed),
``open_until`` (ms), and while half-open the ``trial`` token and ``trial_until`` (ms) of the one
call let through. Times come from Redis's own clock (``TIME``), so every worker process and pod
agrees on them whatever its own clock says.

Transitions: ``closed`` → ``open`` after ``threshold`` consecutive failures; ``open`` →
``half_open`` when the first call after ``open_until`` asks (it becomes the trial); the trial's
success → ``closed``, its failure → ``open`` again. A trial whose process died never reports: its
lease ends at ``trial_until`` and the next call becomes the trial. Outcomes of calls that were let
through before the breaker opened, or that are not the current trial, change nothing.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Literal

import redis

KEY_PREFIX = "callboard:breaker:"

#: A breaker's key outlives its last change by a day (then it is closed again, with no failures).
_IDLE_TTL_MS = 86_400_000

Outcome = Literal["success", "failure", "neutral"]
Transition = Literal["opened", "half_open", "closed"]

# ARGV: token, trial_ms, ttl_ms. Returns {decision, wait_ms, transition, state}.
_ACQUIRE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'closed' then return {'allow', 0, '', 'closed'} end
if state == 'open' then
  local reopen = tonumber(redis.call('HGET', KEYS[1], 'open_until'))
  if now < reopen then return {'wait', reopen - now, '', 'open'} end
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'trial', ARGV[1], 'trial_until', now + ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {'trial', 0, 'half_open', 'half_open'}
end
local lease = tonumber(redis.call('HGET', KEYS[1], 'trial_until') or '0')
if now < lease then return {'wait', lease - now, '', 'half_open'} end
redis.call('HSET', KEYS[1], 'trial', ARGV[1], 'trial_until', now + ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {'trial', 0, '', 'half_open'}
"""

# ARGV: outcome, token ('' when not a trial), threshold, recovery_ms, ttl_ms. Returns a transition or ''.
_RECORD = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local function open()
  redis.call('HSET', KEYS[1], 'state', 'open', 'open_until', now + ARGV[4])
  redis.call('HDEL', KEYS[1], 'trial', 'trial_until', 'failures')
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return 'opened'
end
if state == 'half_open' then
  if ARGV[2] == '' or redis.call('HGET', KEYS[1], 'trial') ~= ARGV[2] then return '' end
  if ARGV[1] == 'success' then redis.call('DEL', KEYS[1]) return 'closed' end
  if ARGV[1] == 'failure' then return open() end
  redis.call('HDEL', KEYS[1], 'trial', 'trial_until')
  return ''
end
if state ~= 'closed' then return '' end
if ARGV[1] == 'success' then
  if redis.call('HEXISTS', KEYS[1], 'failures') == 1 then redis.call('DEL', KEYS[1]) end
  return ''
end
if ARGV[1] == 'failure' then
  local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
  if failures >= tonumber(ARGV[3]) then return open() end
  redis.call('HSET', KEYS[1], 'state', 'closed')
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
return ''
"""


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a call may go now. ``trial`` is this call's token when it is the half-open trial;
    ``wait`` is the seconds until the breaker lets a call through again (0 when allowed);
    ``transition`` is ``"half_open"`` when this call moved the breaker there."""

    allowed: bool
    state: str
    wait: float = 0.0
    trial: str | None = None
    transition: Transition | None = None


class BreakerStore:
    """The breakers of one Redis. ``threshold`` consecutive failures open a breaker for
    ``recovery`` seconds. Every method raises ``redis.RedisError`` when Redis is unreachable."""

    def __init__(self, client: redis.Redis, *, threshold: int, recovery: float) -> None:
        self.client = client
        self.threshold = threshold
        self.recovery_ms = int(recovery * 1000)
        self._acquire = client.register_script(_ACQUIRE)
        self._record = client.register_script(_RECORD)

    def acquire(self, name: str, *, trial_lease: float) -> Decision:
        """Ask to call through breaker ``name``. A half-open trial holds its lease for
        ``trial_lease`` seconds (the longest the call can run) unless it reports sooner."""
        token = secrets.token_hex(8)
        trial_ms = max(1, int(trial_lease * 1000))
        reply = self._acquire(keys=[KEY_PREFIX + name], args=[token, trial_ms, self._ttl(trial_ms)])
        decision, wait_ms, transition, state = (_text(item) for item in reply)
        if decision == "wait":
            return Decision(False, state, wait=int(wait_ms) / 1000)
        return Decision(
            True,
            state,
            trial=token if decision == "trial" else None,
            transition="half_open" if transition == "half_open" else None,
        )

    def record(self, name: str, outcome: Outcome, trial: str | None = None) -> Transition | None:
        """Report how a call let through by :meth:`acquire` ended; returns the transition it made
        (``"opened"`` or ``"closed"``) or ``None``. ``neutral`` (the remote answered but refused
        for good) neither counts as a failure nor closes; a neutral trial frees the lease."""
        reply = self._record(
            keys=[KEY_PREFIX + name],
            args=[outcome, trial or "", self.threshold, self.recovery_ms, self._ttl(0)],
        )
        text = _text(reply)
        return "opened" if text == "opened" else "closed" if text == "closed" else None

    def state(self, name: str) -> str:
        """The breaker's state now (``closed`` when it has no key)."""
        value = self.client.hget(KEY_PREFIX + name, "state")
        return _text(value) if value is not None else "closed"

    def _ttl(self, trial_ms: int) -> int:
        return max(self.recovery_ms, trial_ms) + _IDLE_TTL_MS


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
