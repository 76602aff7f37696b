"""Rate limits per org, per user and per IP, with plan tiers, on REST and events.

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
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Protocol

from aiohttp import web
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from leadstream.server.http.responses import json_response

if TYPE_CHECKING:
    from leadstream.server.redis_connections import RedisClient

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]
TierOf = Callable[[str], "str | Awaitable[str]"]
PrincipalOf = Callable[[web.Request], "tuple[str, str] | None"]

# Scope names, also the `scope` label of the rejection metric.
USER, ORG, IP, ANONYMOUS_IP = "user", "org", "ip", "anonymous_ip"
# New Socket.IO transports (engine.io handshakes) per address.
HANDSHAKE = "handshake"


@dataclass(frozen=True, slots=True)
class Limit:
    """At most `requests` in any sliding window of `window_s` seconds."""

    requests: int
    window_s: float
    window_ms: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.requests < 1 or self.window_s < 0.001:
            raise ValueError(f"a limit needs requests >= 1 and window >= 1 ms, not {self}")
        object.__setattr__(self, "window_ms", round(self.window_s * 1000))

    def __str__(self) -> str:
        return f"{self.requests}/{self.window_s:g}s"


@dataclass(frozen=True, slots=True)
class Tier:
    """The limits of one plan. Each scope has a burst and a sustained limit.

    :param user: limits of one user of an org.
    :param org: limits of all users of one org together (above `user`).
    :param ip: limits of authenticated traffic from one address (well above
        `user`: offices and mobile carriers put many users behind one address).
    """

    name: str
    user: tuple[Limit, ...]
    org: tuple[Limit, ...]
    ip: tuple[Limit, ...]


def default_tiers() -> dict[str, Tier]:
    """free: ~10/s per user sustained, bursts of 20; pro and enterprise above it."""
    return {
        "free": Tier(
            "free",
            user=(Limit(20, 1), Limit(100, 10)),
            org=(Limit(60, 1), Limit(300, 10)),
            ip=(Limit(200, 1), Limit(1000, 10)),
        ),
        "pro": Tier(
            "pro",
            user=(Limit(50, 1), Limit(300, 10)),
            org=(Limit(200, 1), Limit(1200, 10)),
            ip=(Limit(500, 1), Limit(3000, 10)),
        ),
        "enterprise": Tier(
            "enterprise",
            user=(Limit(100, 1), Limit(600, 10)),
            org=(Limit(1000, 1), Limit(6000, 10)),
            ip=(Limit(2000, 1), Limit(12000, 10)),
        ),
    }


@dataclass(frozen=True)
class RateLimitSettings:
    """Typed rate-limit configuration (`from_env` reads the `LEADSTREAM_RATE_*` names).

    :param enabled: off lets everything through and adds no headers.
    :param tiers: the plans by name; `tier_of(org)` picks one.
    :param default_tier: the plan of an org whose plan is unknown.
    :param anonymous_ip: limits of unauthenticated requests per address.
    :param handshake_ip: limits of Socket.IO handshakes (new transports) per address.
    :param trusted_proxy_hops: how many proxies in front of the server append to
        `X-Forwarded-For`; 0 uses the peer address and ignores the header (spoofable).
    :param exempt_paths: paths never limited (health checks and scrapes).
    :param exempt_prefixes: path prefixes never limited: static files, and the
        Socket.IO transport (its events are limited one by one with `check_event`).
    :param key_prefix: prefix of the Redis keys.
    :param backend_timeout_s: longest wait for Redis before failing open.
    :param backend_retry_s: after a Redis failure, requests skip Redis this long.
    :param failure_log_every_s: at most one log line per this many seconds while failing.
    """

    enabled: bool = True
    tiers: Mapping[str, Tier] = field(default_factory=default_tiers)
    default_tier: str = "free"
    anonymous_ip: tuple[Limit, ...] = (Limit(10, 1), Limit(60, 10))
    handshake_ip: tuple[Limit, ...] = (Limit(30, 1), Limit(300, 60))
    trusted_proxy_hops: int = 0
    exempt_paths: tuple[str, ...] = ("/healthz", "/readyz", "/metrics")
    exempt_prefixes: tuple[str, ...] = ("/static/", "/socket.io/")
    key_prefix: str = "leadstream:ratelimit"
    backend_timeout_s: float = 0.25
    backend_retry_s: float = 1.0
    failure_log_every_s: float = 60.0

    def __post_init__(self) -> None:
        if self.default_tier not in self.tiers:
            raise _config_error(f"the default rate-limit tier {self.default_tier!r} is not defined")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RateLimitSettings:
        """Build from the environment mapping `Settings.from_env` reads (and only there).

        `LEADSTREAM_RATE_LIMITS` (on|off), `LEADSTREAM_RATE_DEFAULT_TIER`,
        `LEADSTREAM_RATE_{FREE,PRO,ENTERPRISE}_{USER,ORG,IP}` and
        `LEADSTREAM_RATE_ANONYMOUS_IP`, `LEADSTREAM_RATE_HANDSHAKE_IP` as limit lists (`20/1s,100/10s`),
        `LEADSTREAM_TRUSTED_PROXY_HOPS`, `LEADSTREAM_RATE_BACKEND_TIMEOUT_MS`.
        """
        switch = (env.get("LEADSTREAM_RATE_LIMITS") or "on").lower()
        if switch not in ("on", "off"):
            raise _config_error(f"LEADSTREAM_RATE_LIMITS must be 'on' or 'off', not {switch!r}")
        tiers: dict[str, Tier] = {}
        for name, tier in default_tiers().items():
            scopes = {}
            for scope in (USER, ORG, IP):
                var = f"LEADSTREAM_RATE_{name.upper()}_{scope.upper()}"
                raw = env.get(var)
                scopes[scope] = parse_limits(var, raw) if raw else getattr(tier, scope)
            tiers[name] = Tier(name, **scopes)
        raw_anonymous = env.get("LEADSTREAM_RATE_ANONYMOUS_IP")
        raw_handshake = env.get("LEADSTREAM_RATE_HANDSHAKE_IP")
        hops = _non_negative_int(env, "LEADSTREAM_TRUSTED_PROXY_HOPS", 0)
        timeout_ms = _non_negative_int(env, "LEADSTREAM_RATE_BACKEND_TIMEOUT_MS", 250)
        return cls(
            enabled=switch == "on",
            tiers=tiers,
            default_tier=env.get("LEADSTREAM_RATE_DEFAULT_TIER") or "free",
            anonymous_ip=(
                parse_limits("LEADSTREAM_RATE_ANONYMOUS_IP", raw_anonymous)
                if raw_anonymous
                else cls.anonymous_ip
            ),
            handshake_ip=(
                parse_limits("LEADSTREAM_RATE_HANDSHAKE_IP", raw_handshake)
                if raw_handshake
                else cls.handshake_ip
            ),
            trusted_proxy_hops=hops,
            backend_timeout_s=max(timeout_ms, 1) / 1000,
        )


_LIMIT = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(ms|s|m|h)\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_limits(name: str, text: str) -> tuple[Limit, ...]:
    """Parse `20/1s,100/10s` (units ms, s, m, h; `10/s` means per 1 s).

    :param name: the variable's name, for the error message.
    :raises ConfigError: naming the variable and the part that cannot be read.
    """
    limits = []
    for part in text.split(","):
        match = _LIMIT.match(part)
        if not match:
            raise _config_error(f"{name}: {part.strip()!r} is not a limit like 20/1s or 100/10s")
        count, amount, unit = match.groups()
        try:
            limits.append(Limit(int(count), float(amount or 1) * _UNIT_S[unit]))
        except ValueError as exc:
            raise _config_error(f"{name}: {exc}") from None
    return tuple(limits)


def _config_error(message: str) -> Exception:
    """A `ConfigError` (which the CLI reports by itself), naming the variable."""
    # Imported here: config.py holds RateLimitSettings, so a top-level import would be a cycle.
    from leadstream.server.config import ConfigError

    return ConfigError(message)


def _non_negative_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _config_error(f"{name} must be an integer, not {raw!r}") from None
    if value < 0:
        raise _config_error(f"{name} must not be negative, not {value}")
    return value


class Rule(NamedTuple):
    """One limit of one scope and subject; the limits of a scope share its `key`."""

    scope: str
    key: str
    limit: Limit


class WindowCount(NamedTuple):
    """A backend's reading of one rule, before this request was counted.

    :param previous: requests in the previous fixed window.
    :param current: requests in the current fixed window.
    :param elapsed_s: time since the current fixed window began.
    :param fits: whether this request fits the limit.
    """

    previous: int
    current: int
    elapsed_s: float
    fits: bool


@dataclass(frozen=True, slots=True)
class RateLimitDecision:
    """The answer to one check, with what a `429` and the `RateLimit-*` headers need.

    :param allowed: whether the request may proceed.
    :param limit: requests allowed in the window of the reported limit.
    :param remaining: requests left in it after this one.
    :param reset_s: seconds until that limit's quota is whole again, without more traffic.
    :param retry_after_s: seconds until this request would be allowed (0 when allowed).
    :param scope: the scope of the reported limit (`user`, `org`, `ip`,
        `anonymous_ip`), or None when nothing was limited (disabled, exempt, failed open).
    :param window_s: the window of the reported limit.
    :param failed_open: allowed unchecked because the backend failed.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_s: float
    retry_after_s: float
    scope: str | None = None
    window_s: float = 0.0
    failed_open: bool = False

    def headers(self) -> dict[str, str]:
        """The `RateLimit-*` headers, and `Retry-After` when refused (none when unlimited)."""
        if self.scope is None:
            return {}
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset_s)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_seconds)
        return headers

    @property
    def retry_after_seconds(self) -> int:
        """`retry_after_s` as the whole seconds of `Retry-After` (at least 1)."""
        return max(1, math.ceil(self.retry_after_s))

    @property
    def message(self) -> str:
        """Human text for the error body or the error ack."""
        return (
            f"too many requests ({self.scope} limit: {self.limit} per {self.window_s:g} s); "
            f"retry in {self.retry_after_seconds} s"
        )

    def error(self) -> dict[str, str]:
        """`{"code": "rate_limited", "message"}`, as PROTOCOL.md's REST body and acks carry."""
        return {"code": "rate_limited", "message": self.message}


UNLIMITED = RateLimitDecision(allowed=True, limit=0, remaining=0, reset_s=0, retry_after_s=0)
FAILED_OPEN = RateLimitDecision(
    allowed=True, limit=0, remaining=0, reset_s=0, retry_after_s=0, failed_open=True
)


class RateLimitBackendError(Exception):
    """The backend could not answer (Redis down, slow or refusing); the limiter fails open."""


class RateLimitBackend(Protocol):
    """Counts requests in sliding-window counters, atomically for all rules of a request."""

    async def hit(self, rules: Sequence[Rule], cost: int) -> list[WindowCount]:
        """Read every rule's counters; when all fit, count `cost` on each.

        :raises RateLimitBackendError: when the store of the counters is unavailable.
        """
        ...


class InProcessRateLimitBackend:
    """Counters in this process's memory: the embedded default, exact for one instance.

    :param clock: seconds from a monotonic clock (tests pass a fake one).
    :param sweep_every_s: how often counters idle for two windows are dropped.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, sweep_every_s: float = 60.0
    ) -> None:
        self._clock = clock
        self._sweep_every_s = sweep_every_s
        self._next_sweep = clock() + sweep_every_s
        # (key, window ms) -> [window index, current count, previous count, expires at]
        self._windows: dict[tuple[str, int], list[float]] = {}

    def __len__(self) -> int:
        return len(self._windows)

    async def hit(self, rules: Sequence[Rule], cost: int) -> list[WindowCount]:
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        counts: list[WindowCount] = []
        indexes: list[int] = []
        all_fit = True
        # No await below: the read and the update are one step for the event loop.
        for rule in rules:
            window = rule.limit.window_s
            index = math.floor(now / window)
            previous = current = 0
            entry = self._windows.get((rule.key, rule.limit.window_ms))
            if entry is not None:
                if entry[0] == index:
                    current, previous = int(entry[1]), int(entry[2])
                elif entry[0] == index - 1:
                    previous = int(entry[1])
            elapsed = now - index * window
            estimate = previous * (window - elapsed) / window + current
            fits = estimate + cost <= rule.limit.requests
            all_fit = all_fit and fits
            counts.append(WindowCount(previous, current, elapsed, fits))
            indexes.append(index)
        if all_fit:
            for rule, count, index in zip(rules, counts, indexes, strict=True):
                expires = (index + 2) * rule.limit.window_s
                entry = [index, count.current + cost, count.previous, expires]
                self._windows[rule.key, rule.limit.window_ms] = entry
        return counts

    def _sweep(self, now: float) -> None:
        stale = [key for key, entry in self._windows.items() if entry[3] <= now]
        for key in stale:
            del self._windows[key]
        self._next_sweep = now + self._sweep_every_s


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
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
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


class RateLimiter:
    """Decides whether a request or event may proceed, per user, org and IP.

    :param backend: where the counters live.
    :param settings: tiers, anonymous limits, fail-open timing.
    :param tier_of: the tier name of an org (sync or async) [every org gets
        `settings.default_tier`]; an unknown name falls back to the default.
    :param on_reject: called with the scope of each refusal (metrics).
    :param on_backend_failure: called on each backend failure (metrics).
    :param on_fail_open: called for each request allowed unchecked (metrics).
    :param clock: monotonic seconds, for the fail-open timing.
    """

    def __init__(
        self,
        backend: RateLimitBackend,
        settings: RateLimitSettings | None = None,
        *,
        tier_of: TierOf | None = None,
        on_reject: Callable[[str], None] | None = None,
        on_backend_failure: Callable[[], None] | None = None,
        on_fail_open: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.settings = settings or RateLimitSettings()
        self._tier_of = tier_of
        self._on_reject = on_reject
        self._on_backend_failure = on_backend_failure
        self._on_fail_open = on_fail_open
        self._clock = clock
        #: backend calls that failed, and requests allowed unchecked since start.
        self.backend_failures = 0
        self.failed_open = 0
        self._failing = False
        self._skip_backend_until = float("-inf")
        self._next_failure_log = float("-inf")
        self._unlogged_failures = 0
        self._unknown_tiers: set[str] = set()

    @classmethod
    def from_settings(
        cls,
        settings: RateLimitSettings,
        *,
        redis: RedisClient | None = None,
        tier_of: TierOf | None = None,
        on_reject: Callable[[str], None] | None = None,
        on_backend_failure: Callable[[], None] | None = None,
        on_fail_open: Callable[[], None] | None = None,
    ) -> RateLimiter:
        """A limiter on Redis when a client is given, else in this process."""
        backend: RateLimitBackend
        if redis is not None:
            backend = RedisRateLimitBackend(redis, timeout_s=settings.backend_timeout_s)
        else:
            backend = InProcessRateLimitBackend()
        return cls(
            backend,
            settings,
            tier_of=tier_of,
            on_reject=on_reject,
            on_backend_failure=on_backend_failure,
            on_fail_open=on_fail_open,
        )

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    async def check(
        self,
        *,
        org: str | None = None,
        user: str | None = None,
        ip: str | None = None,
        tier: str | None = None,
        cost: int = 1,
    ) -> RateLimitDecision:
        """Count one request and say whether it may proceed.

        :param org: the caller's org; with `user`, None for unauthenticated traffic.
        :param user: the caller's user id within the org.
        :param ip: the client address (None skips the IP limits).
        :param tier: the org's tier name [from `tier_of`, else the default tier].
        :param cost: how many requests this one counts as.
        """
        if not self.settings.enabled:
            return UNLIMITED
        if org is not None and user is not None:
            if tier is None:
                tier = await self._resolve_tier(org)
            rules = self._authenticated_rules(self._tier(tier), org, user, ip)
        elif ip is not None:
            rules = self._rules(ANONYMOUS_IP, ip, self.settings.anonymous_ip)
        else:
            return UNLIMITED
        return await self._hit(rules, cost)

    async def check_handshake(self, ip: str | None) -> RateLimitDecision:
        """Count one new Socket.IO transport from `ip` (`handshake_ip` limits)."""
        if not self.settings.enabled or ip is None:
            return UNLIMITED
        return await self._hit(self._rules(HANDSHAKE, ip, self.settings.handshake_ip), 1)

    async def _hit(self, rules: list[Rule], cost: int) -> RateLimitDecision:
        if self._clock() < self._skip_backend_until:
            return self._fail_open()
        try:
            counts = await self.backend.hit(rules, cost)
        except RateLimitBackendError as exc:
            self._backend_failed(exc)
            return self._fail_open()
        if self._failing:
            self._failing = False
            log.warning("rate-limit backend answers again; limits apply again")
        decision = decide(rules, counts, cost)
        if not decision.allowed and self._on_reject is not None and decision.scope:
            self._on_reject(decision.scope)
        return decision

    async def check_event(
        self, org: str, user: str, ip: str | None, *, tier: str | None = None, cost: int = 1
    ) -> RateLimitDecision:
        """Count one Socket.IO event of an authenticated connection (see `check`)."""
        return await self.check(org=org, user=user, ip=ip, tier=tier, cost=cost)

    async def _resolve_tier(self, org: str) -> str:
        if self._tier_of is None:
            return self.settings.default_tier
        name = self._tier_of(org)
        if inspect.isawaitable(name):
            name = await name
        return name

    def _tier(self, name: str) -> Tier:
        tier = self.settings.tiers.get(name)
        if tier is not None:
            return tier
        if name not in self._unknown_tiers:
            self._unknown_tiers.add(name)
            log.warning("unknown rate-limit tier %r; using %r", name, self.settings.default_tier)
        return self.settings.tiers[self.settings.default_tier]

    def _authenticated_rules(self, tier: Tier, org: str, user: str, ip: str | None) -> list[Rule]:
        rules = self._rules(USER, f"{org}/{user}", tier.user, slot=org)
        rules += self._rules(ORG, org, tier.org)
        if ip is not None:
            rules += self._rules(IP, ip, tier.ip)
        return rules

    def _rules(
        self, scope: str, ident: str, limits: tuple[Limit, ...], *, slot: str | None = None
    ) -> list[Rule]:
        # `{slot}` is a Redis Cluster hash tag: a user's and its org's keys share a slot.
        key = f"{self.settings.key_prefix}:{scope}:{{{slot or ident}}}"
        key += f":{ident}" if slot else ""
        return [Rule(scope, key, limit) for limit in limits]

    def _fail_open(self) -> RateLimitDecision:
        self.failed_open += 1
        if self._on_fail_open is not None:
            self._on_fail_open()
        return FAILED_OPEN

    def _backend_failed(self, exc: RateLimitBackendError) -> None:
        now = self._clock()
        self.backend_failures += 1
        self._failing = True
        self._skip_backend_until = now + self.settings.backend_retry_s
        if self._on_backend_failure is not None:
            self._on_backend_failure()
        # One line per interval, not one per request, while the backend is down.
        if now < self._next_failure_log:
            self._unlogged_failures += 1
            return
        log.warning(
            "rate-limit backend failed (%s); allowing requests unchecked "
            "(%d more failures since the last report)",
            exc,
            self._unlogged_failures,
        )
        self._unlogged_failures = 0
        self._next_failure_log = now + self.settings.failure_log_every_s


def decide(rules: Sequence[Rule], counts: Sequence[WindowCount], cost: int) -> RateLimitDecision:
    """Turn a backend's readings into a decision reporting the most pressing limit:
    on a refusal the one refusing longest, else the one with the fewest requests left.
    """
    if not rules:
        return UNLIMITED
    allowed = all(count.fits for count in counts)
    if allowed:
        # Fewest left after this request; on a tie, the one taking longest to refill.
        pick = min(
            range(len(rules)),
            key=lambda i: (_left(rules[i].limit, counts[i], cost), -rules[i].limit.window_s),
        )
    else:
        pick = max(
            (i for i in range(len(rules)) if not counts[i].fits),
            key=lambda i: _wait_to_fit(rules[i].limit, counts[i], cost),
        )
    return _evaluate(rules[pick], counts[pick], cost, counted=allowed)


def _left(limit: Limit, count: WindowCount, cost: int) -> float:
    window = limit.window_s
    return limit.requests - (count.previous * (window - count.elapsed_s) / window + count.current)


def _evaluate(rule: Rule, count: WindowCount, cost: int, *, counted: bool) -> RateLimitDecision:
    limit, window = rule.limit.requests, rule.limit.window_s
    previous, current, elapsed = count.previous, count.current, count.elapsed_s
    estimate = previous * (window - elapsed) / window + current
    if counted:
        estimate += cost
        current += cost
    # Quota whole again: the previous window's share runs out at this window's
    # end; the current window's only at the end of the next one.
    if current > 0:
        reset_s = 2 * window - elapsed
    elif previous > 0:
        reset_s = window - elapsed
    else:
        reset_s = 0.0
    retry_after_s = 0.0 if count.fits else _wait_to_fit(rule.limit, count, cost)
    return RateLimitDecision(
        allowed=count.fits,
        limit=limit,
        remaining=max(0, math.floor(limit - estimate + 1e-9)),
        reset_s=reset_s,
        retry_after_s=retry_after_s,
        scope=rule.scope,
        window_s=window,
    )


def _wait_to_fit(limit: Limit, count: WindowCount, cost: int) -> float:
    """Seconds until `cost` more requests fit, if no other request is counted meanwhile."""
    n, window = limit.requests, limit.window_s
    previous, current, elapsed = count.previous, count.current, count.elapsed_s
    if cost > n:
        return 2 * window - elapsed
    if current + cost <= n and previous > 0:
        # Within this window the previous window's share shrinks at previous/window per second.
        excess = previous * (window - elapsed) / window + current + cost - n
        return max(0.0, excess * window / previous)
    # Only in the next window, as the current count becomes the shrinking previous one.
    return (window - elapsed) + window * max(0.0, 1 - (n - cost) / max(current, 1))


def forwarded_client_ip(
    peer: str | None, forwarded_for: str | None, trusted_hops: int
) -> str | None:
    """The client address: the peer, or the entry `trusted_hops` from the right of
    `X-Forwarded-For` (entries further left are written by the client and can be forged).
    """
    if trusted_hops <= 0 or not forwarded_for:
        return peer
    hops = [part.strip() for part in forwarded_for.split(",") if part.strip()]
    if not hops:
        return peer
    return hops[-min(trusted_hops, len(hops))]


def client_ip(request: web.Request, trusted_hops: int = 0) -> str | None:
    """The client address of an aiohttp request (see `forwarded_client_ip`).

    For Socket.IO, pass `environ["aiohttp.request"]` from the connect handler:
    the environ's `REMOTE_ADDR` is not the peer's address.
    """
    # A header sent as several lines is one list (RFC 9110 5.3): the proxies' entries
    # are on the last line, and the first may be the client's own forgery.
    forwarded = ",".join(request.headers.getall("X-Forwarded-For", ()))
    return forwarded_client_ip(request.remote, forwarded or None, trusted_hops)


def rate_limited_response(decision: RateLimitDecision) -> web.Response:
    """`429` with PROTOCOL.md's error body, `Retry-After` and the `RateLimit-*` headers."""
    body = {
        "error": {
            **decision.error(),
            "details": {"scope": decision.scope, "retryAfter": decision.retry_after_seconds},
        }
    }
    return json_response(body, status=429, headers=decision.headers())


def rate_limit_middleware(
    limiter: RateLimiter,
    *,
    principal_of: PrincipalOf,
    tier_of: TierOf | None = None,
    ip_of: Callable[[web.Request], str | None] | None = None,
    handshake_path: str = "/socket.io/",
) -> Middleware:
    """An aiohttp middleware answering `429` past the limits, `RateLimit-*` headers otherwise.

    :param limiter: the app's limiter.
    :param principal_of: `(org, user)` of an authenticated request, None otherwise
        (then only the anonymous per-IP limits apply).
    :param tier_of: the tier name of an org [the limiter's own `tier_of`].
    :param ip_of: the client address [`client_ip` with the settings' trusted proxy hops].
    :param handshake_path: the Socket.IO path: a request there without `sid` opens a
        transport and counts against `handshake_ip`; its other requests are not limited.
    """
    settings = limiter.settings
    exempt_paths = frozenset(settings.exempt_paths)
    exempt_prefixes = settings.exempt_prefixes
    hops = settings.trusted_proxy_hops

    def default_ip_of(request: web.Request) -> str | None:
        return client_ip(request, hops)

    address_of = ip_of or default_ip_of

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if limiter.enabled and path == handshake_path and "sid" not in request.query:
            if request.method == "GET":
                decision = await limiter.check_handshake(address_of(request))
                if not decision.allowed:
                    return rate_limited_response(decision)
            return await handler(request)
        if not limiter.enabled or path in exempt_paths or path.startswith(exempt_prefixes):
            return await handler(request)
        ip = address_of(request)
        caller = principal_of(request)
        if caller is None:
            decision = await limiter.check(ip=ip)
        else:
            org, user = caller
            tier = None
            if tier_of is not None:
                named = tier_of(org)
                tier = await named if inspect.isawaitable(named) else named
            decision = await limiter.check(org=org, user=user, ip=ip, tier=tier)
        if not decision.allowed:
            return rate_limited_response(decision)
        response = await handler(request)
        # A streamed response has sent its headers already.
        if decision.scope is not None and not response.prepared:
            response.headers.update(decision.headers())
        return response

    return middleware
