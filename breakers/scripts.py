"""A breaker's Redis keys and the Lua scripts that read and change them, each one round trip.

A breaker is three keys sharing one hash tag, so that its scripts would run on Redis Cluster:
    <prefix>:breaker:{<endpoint>|<model>}            a hash: mode, state, opened (ms), failures, seq
    <prefix>:breaker:{<endpoint>|<model>}:failures   the closed breaker's failures (a sorted set by time, ms)
    <prefix>:breaker:{<endpoint>|<model>}:probe      held by the half-open breaker's one probe, with a TTL
Endpoint names have no `|` (letters, digits and dashes), so a pair names one breaker only.

Every script reads the time from Redis itself: the processes' clocks never have to agree.
The hash never expires: it holds the mode an admin forced. Redis that lost it (a restart without
persistence, an eviction) says so to the next check (`seed`), which puts the mode back from the
database (breakers.models.Breaker) before it answers.
"""

import hashlib
from typing import Any

import redis
import redis.asyncio as aioredis
from django.conf import settings

from parley.redis_clients import is_cluster

# (One line each, so that a script's errors name the line.)
_NOW = "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

# KEYS: the hash, the failures, the probe. ARGV: cool-down (ms), probe TTL (ms), the mode to seed a
# hash without one with ('': ask the caller for it).
# Returns {'seed'}, or {state, allowed (1/0), probe (1/0), wait (ms), the state it left ('': none), failures}.
CHECK = _NOW + """
local mode = redis.call('HGET', KEYS[1], 'mode')
if not mode then
  if ARGV[3] == '' then return {'seed'} end
  mode = ARGV[3]
  redis.call('HSET', KEYS[1], 'mode', mode)
end
if mode == 'forced_open' then return {'forced_open', 0, 0, tonumber(ARGV[1]), '', 0} end
if mode == 'forced_closed' then return {'forced_closed', 1, 0, 0, '', 0} end
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'closed' then return {'closed', 1, 0, 0, '', 0} end
local failures = tonumber(redis.call('HGET', KEYS[1], 'failures') or '0')
if state == 'open' then
  local wait = tonumber(redis.call('HGET', KEYS[1], 'opened') or '0') + tonumber(ARGV[1]) - now
  if wait > 0 then return {'open', 0, 0, wait, '', failures} end
  -- the cool-down is over: this caller, and only this one, probes
  redis.call('HSET', KEYS[1], 'state', 'half_open')
  redis.call('SET', KEYS[3], now, 'PX', ARGV[2])
  return {'half_open', 1, 1, 0, 'open', failures}
end
-- half-open: the probe is free again only once its TTL lapsed (its process died, or never reported)
if redis.call('SET', KEYS[3], now, 'NX', 'PX', ARGV[2]) then return {'half_open', 1, 1, 0, '', failures} end
return {'half_open', 0, 0, math.max(1, redis.call('PTTL', KEYS[3])), '', failures}
"""

# KEYS: as CHECK's. ARGV: ok (1/0), probe (1/0), the failures that open it, the window (ms).
# Returns {the state it left ('': no change), the state it entered, failures}.
RECORD = _NOW + """
local mode = redis.call('HGET', KEYS[1], 'mode')
if mode == 'forced_open' or mode == 'forced_closed' then return {'', '', 0} end
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if ARGV[2] == '1' then
  -- only a half-open breaker's probe decides; a late one, after it was decided, changes nothing
  if state ~= 'half_open' then return {'', '', 0} end
  redis.call('DEL', KEYS[3])
  if ARGV[1] == '1' then
    redis.call('HSET', KEYS[1], 'state', 'closed')
    redis.call('HDEL', KEYS[1], 'opened', 'failures')
    redis.call('DEL', KEYS[2])
    return {'half_open', 'closed', 0}
  end
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened', now, 'failures', 1)
  return {'half_open', 'open', 1}
end
-- calls admitted before it opened may still report: only a closed breaker counts failures
if ARGV[1] == '1' or state ~= 'closed' then return {'', '', 0} end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[4]))
redis.call('ZADD', KEYS[2], now, redis.call('HINCRBY', KEYS[1], 'seq', 1))
local failures = redis.call('ZCARD', KEYS[2])
if failures < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  return {'', '', failures}
end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'state', 'open', 'opened', now, 'failures', failures)
return {'closed', 'open', failures}
"""

# KEYS: as CHECK's. ARGV: the mode (auto, forced_open, forced_closed).
# Returns the state before (the forced mode, or the automatic state). Either way the automatic
# state starts again closed with no failures: an admin's word is newer than anything counted.
SET_MODE = """
local mode = redis.call('HGET', KEYS[1], 'mode')
local before = redis.call('HGET', KEYS[1], 'state') or 'closed'
if mode == 'forced_open' or mode == 'forced_closed' then before = mode end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HDEL', KEYS[1], 'opened', 'failures')
redis.call('HSET', KEYS[1], 'mode', ARGV[1], 'state', 'closed')
return before
"""

# KEYS: as CHECK's. ARGV: the window (ms). Changes nothing.
# Returns {mode ('': none yet), state, opened (ms, '': never), failures at opening, failures in the
# window, the probe's TTL (ms, negative: none), now (ms)}.
PEEK = _NOW + """
return {
  redis.call('HGET', KEYS[1], 'mode') or '', redis.call('HGET', KEYS[1], 'state') or 'closed',
  redis.call('HGET', KEYS[1], 'opened') or '', tonumber(redis.call('HGET', KEYS[1], 'failures') or '0'),
  redis.call('ZCOUNT', KEYS[2], '(' .. (now - tonumber(ARGV[1])), '+inf'), redis.call('PTTL', KEYS[3]), now
}
"""


def breaker_keys(endpoint: str, model: str) -> list[str]:
    """The hash, failures and probe keys of one breaker, in the order the scripts take them."""
    base = f"{settings.PARLEY_KEY_PREFIX}:breaker:{{{endpoint}|{model}}}"
    return [base, f"{base}:failures", f"{base}:probe"]


class Script:
    """A Lua script run by EVALSHA, sent in full only when Redis does not have it (first use, or a restart)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()

    def run(self, client: redis.Redis, keys: list[str], args: list[object]) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return client.eval(self.text, len(keys), *keys, *args)

    async def arun(self, client: aioredis.Redis, keys: list[str], args: list[object]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return await client.eval(self.text, len(keys), *keys, *args)

    def run_many(self, client: redis.Redis, calls: list[tuple[list[str], list[object]]]) -> list[Any]:
        """One pipeline of many runs (many breakers; their keys may live on different nodes). A
        cluster's pipeline takes no scripts, so there they run one at a time."""
        if is_cluster(client):
            return [self.run(client, keys, args) for keys, args in calls]
        for attempt in range(2):
            pipe = client.pipeline(transaction=False)
            for keys, args in calls:
                pipe.evalsha(self.sha, len(keys), *keys, *args)
            replies = pipe.execute(raise_on_error=False)
            if attempt or not any(isinstance(reply, redis.exceptions.NoScriptError) for reply in replies):
                break
            client.script_load(self.text)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies


check_script, record_script, set_mode_script, peek_script = Script(CHECK), Script(RECORD), Script(SET_MODE), Script(PEEK)


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
