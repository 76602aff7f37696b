"""What is limited: scopes, limits, the plans (tiers) and the limiter's settings.

Plain data with no I/O: `server/config.py` builds `RateLimitSettings` from the
environment (the one settings loader), and everything else here reads it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

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


_LIMIT = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(ms|s|m|h)\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_limits(text: str) -> tuple[Limit, ...]:
    """Parse `20/1s,100/10s` (units ms, s, m, h; `10/s` means per 1 s).

    :raises ValueError: naming the part that cannot be read (the settings
        loader adds the variable's name).
    """
    limits = []
    for part in text.split(","):
        match = _LIMIT.match(part)
        if not match:
            raise ValueError(f"{part.strip()!r} is not a limit like 20/1s or 100/10s")
        count, amount, unit = match.groups()
        limits.append(Limit(int(count), float(amount or 1) * _UNIT_S[unit]))
    return tuple(limits)


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
    """Typed rate-limit configuration (`Settings.from_env` reads `LEADSTREAM_RATE_*` into it).

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
    :raises ValueError: when `default_tier` is not one of `tiers`.
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
            raise ValueError(f"the default rate-limit tier {self.default_tier!r} is not defined")


class Rule(NamedTuple):
    """One limit of one scope and subject; the limits of a scope share its `key`."""

    scope: str
    key: str
    limit: Limit
