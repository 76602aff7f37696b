"""Rate limits per org, per user and per IP, with plan tiers, on REST and events.

Modules, by job:

- `policy`: scopes, `Limit`, `Tier`, `RateLimitSettings` (plain data;
  `server/config.py` fills it from `LEADSTREAM_RATE_*`, the one settings loader);
- `window`: the sliding-window counter's arithmetic and `RateLimitDecision`;
- `backends`: the backend protocol and `InProcessRateLimitBackend`;
- `redis_backend`: `RedisRateLimitBackend` and its Lua script;
- `limiter`: `RateLimiter` (which limits apply, failing open);
- `middleware`: the aiohttp middleware, the `429` and `client_ip` (HTTP only;
  not imported here, so `realtime/` can use the limiter without it).

Algorithm: the sliding-window *counter* (two fixed windows, the previous one
weighted by how much of it still overlaps the sliding window), not a
sliding-window *log*. A log keeps one timestamp per request (a sorted set in
Redis: memory and work grow with the limit times the number of keys); the
counter keeps three numbers per key whatever the rate, and one Lua script
decides every key of a request in a single round trip. Its one assumption,
that the previous window's requests were spread evenly, errs by a fraction of
one window's count at most, and bursts are bounded by a short burst window
beside the sustained one anyway.

Each scope (user, org, IP) has one or more `Limit`s: a short burst window and
a longer sustained one (free tier: 20 per 1 s and 100 per 10 s, so ~10/s
sustained with short bursts). A request is allowed when it fits every limit
of every scope; only then is it counted, everywhere at once (a refused request
consumes nothing). Unauthenticated traffic is limited per IP only
(`anonymous_ip`); authenticated traffic per user, per org and per IP, the
tier's IP limit being well above its user limit since many users share one
address.

Backends: `InProcessRateLimitBackend` (the embedded default, one process) and
`RedisRateLimitBackend` (any number of instances, Redis's own clock). When
Redis fails the limiter fails open: the request is allowed, the failure is
counted and logged at most once per `failure_log_every_s`, and Redis is left
alone for `backend_retry_s` before the next try.

Headers: the separate IETF draft headers `RateLimit-Limit`,
`RateLimit-Remaining`, `RateLimit-Reset` (delta seconds, draft-ietf-httpapi-
ratelimit-headers up to -07), which proxies and client libraries parse today,
rather than the later combined `RateLimit`/`RateLimit-Policy` structured
fields; `Retry-After` on every `429`. They describe the limit closest to
exhaustion (on a refusal, the one that refused for longest).

Why not the `limits` library (5.8, which has a sliding-window counter with
in-memory and async Redis storage): its unit is one limit per call
(`hit(item, *identifiers, cost)` -> bool). A request here is checked against
up to six limits (user, org and IP, burst and sustained), so with `limits` it
would take six Redis round trips instead of one, and would not be
all-or-nothing: a request the org limit refuses would already have spent the
user's quota (ours counts nothing on a refusal), and testing first then
hitting doubles the round trips and races. `hit` returns only a bool, so the
`RateLimit-*` numbers and a `Retry-After` that accounts for `cost` would take
another call per limit (`get_window_stats`). Its windows are whole seconds
(`RateLimitItemPerSecond` and up), ours go down to 1 ms; its async Redis
storages (one class each for a server, Sentinel and Cluster, coredis by
default) are built from their own URI schemes, beside `RedisConnections`,
which already reads `REDIS_URL` for every Redis user; its in-memory storage
reads the wall clock (our tests move a fake monotonic one). Tiers, scopes and failing open would be ours either
way. What remains ours is the Lua script (~60 lines) and the arithmetic
(~100 lines), which the tests pin down.
"""

from leadstream.server.ratelimit.backends import (
    InProcessRateLimitBackend,
    RateLimitBackend,
    RateLimitBackendError,
)
from leadstream.server.ratelimit.limiter import RateLimiter
from leadstream.server.ratelimit.policy import Limit, RateLimitSettings, Tier
from leadstream.server.ratelimit.window import RateLimitDecision

__all__ = [
    "InProcessRateLimitBackend",
    "Limit",
    "RateLimitBackend",
    "RateLimitBackendError",
    "RateLimitDecision",
    "RateLimitSettings",
    "RateLimiter",
    "Tier",
]
