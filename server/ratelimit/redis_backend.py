"""The Redis backend: counters shared by every instance, one script call per request.

`SLIDING_WINDOW_LUA` decides every rule of a request (user, org and IP, burst
and sustained) in one `EVALSHA`: it reads all the request's hashes, and counts
the request on all of them only when it fits every limit. Redis's own clock
(`TIME`) times the windows, so every instance counts on the same clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from redis.asyncio.cluster import RedisCluster

from leadstream.server.ratelimit.backends import RateLimitBackendError
from leadstream.server.ratelimit.policy import Rule
from leadstream.server.ratelimit.window import WindowCount
from leadstream.server.redis_connections import REDIS_ERRORS, RedisClient

# Redis away or refusing, a connection lost, or no answer within the timeout: fail open.
BACKEND_FAILURES: tuple[type[Exception], ...] = (*REDIS_ERRORS, OSError, TimeoutError)

# KEYS: one hash per scope and subject, holding per window (by its length in ms)
# w<ms>: the fixed window's index, c<ms>: its count, p<ms>: the previous window's.
# ARGV[1]: "cost" then "key# limit window_ms" per rule, in one string; the
# reply is one string "allowed" then "previous current elapsed_ms fits" per
# rule. One argument and one bulk reply keep the client's work small, and the
# time is Redis's own, so every instance counts on the same clock.
SLIDING_WINDOW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = {}
for x in string.gmatch(ARGV[1], '%d+') do n[#n + 1] = tonumber(x) end
local cost = n[1]
local hashes = {}
for k = 1, #KEYS do
  local flat = redis.call('HGETALL', KEYS[k])
  local h = {}
  for j = 1, #flat, 2 do h[flat[j]] = tonumber(flat[j + 1]) end
  hashes[k] = h
end
local allowed, reply, updates = 1, {}, {}
for j = 2, #n, 3 do
  local k, limit, window = n[j], n[j + 1], n[j + 2]
  local h = hashes[k]
  local index = math.floor(now / window)
  local w = h['w' .. window]
  local prev, curr = 0, 0
  if w == index then
    curr, prev = h['c' .. window] or 0, h['p' .. window] or 0
  elseif w == index - 1 then
    prev = h['c' .. window] or 0
  end
  local elapsed = now - index * window
  local fits = 1
  if prev * (window - elapsed) / window + curr + cost > limit then
    fits = 0
    allowed = 0
  end
  reply[#reply + 1] = string.format('%d %d %d %d', prev, curr, elapsed, fits)
  updates[#updates + 1] = {k, window, index, prev, curr}
end
if allowed == 1 then
  local fields, ttl = {}, {}
  for _, u in ipairs(updates) do
    local k, window = u[1], u[2]
    local f = fields[k] or {}
    fields[k] = f
    f[#f + 1] = 'w' .. window
    f[#f + 1] = string.format('%d', u[3])
    f[#f + 1] = 'c' .. window
    f[#f + 1] = string.format('%d', u[5] + cost)
    f[#f + 1] = 'p' .. window
    f[#f + 1] = string.format('%d', u[4])
    ttl[k] = math.max(ttl[k] or 0, 2 * window)
  end
  for k, f in pairs(fields) do
    redis.call('HSET', KEYS[k], unpack(f))
    redis.call('PEXPIRE', KEYS[k], ttl[k])
  end
end
return allowed .. ' ' .. table.concat(reply, ' ')
"""


class RedisRateLimitBackend:
    """Counters in Redis, shared by every instance; one script call per request.

    On Redis Cluster a script's keys must share a hash slot: a request's user
    and org keys do (`{org}` tag), its IP key has its own, so there the two
    groups are decided by one call each, at the same time. Each group is
    still all-or-nothing, but when one group refuses, the other has counted
    the request (a refusal costs one unit of the other scope's quota).

    :param redis: a redis-py asyncio client (owned and closed by the caller;
        give it short socket timeouts and few retries: waits here delay requests).
    :param timeout_s: the longest wait for one call before it counts as a failure.
    """

    def __init__(self, redis: RedisClient, *, timeout_s: float = 0.25) -> None:
        self._script = redis.register_script(SLIDING_WINDOW_LUA)
        self._timeout_s = timeout_s
        self._per_slot = isinstance(redis, RedisCluster)  # one call per hash slot

    async def hit(self, rules: Sequence[Rule], cost: int) -> list[WindowCount]:
        groups: dict[str, list[int]] = {}  # hash tag -> positions of its rules
        for i, rule in enumerate(rules):
            groups.setdefault(_hash_tag(rule.key) if self._per_slot else "", []).append(i)
        try:
            async with asyncio.timeout(self._timeout_s):
                replies = await asyncio.gather(
                    *(
                        self._hit_one_slot([rules[i] for i in group], cost)
                        for group in groups.values()
                    )
                )
        except BACKEND_FAILURES as exc:
            raise RateLimitBackendError(f"{type(exc).__name__}: {exc}") from exc
        counts: list[WindowCount] = [WindowCount(0, 0, 0.0, True)] * len(rules)
        for group, group_counts in zip(groups.values(), replies, strict=True):
            for i, count in zip(group, group_counts, strict=True):
                counts[i] = count
        return counts

    async def _hit_one_slot(self, rules: Sequence[Rule], cost: int) -> list[WindowCount]:
        keys: dict[str, int] = {}  # key -> its 1-based position in KEYS
        numbers = [str(cost)]
        for rule in rules:
            position = keys.setdefault(rule.key, len(keys) + 1)
            numbers.append(f"{position} {rule.limit.requests} {rule.limit.window_ms}")
        reply = await self._script(keys=list(keys), args=[" ".join(numbers)])
        values = [int(v) for v in reply.split()[1:]]
        return [
            WindowCount(values[i], values[i + 1], values[i + 2] / 1000, values[i + 3] == 1)
            for i in range(0, len(values), 4)
        ]


def _hash_tag(key: str) -> str:
    """The part of a key Redis Cluster hashes: between the first `{` and the next `}`."""
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start + 1 : end] if start >= 0 and end > start + 1 else key
