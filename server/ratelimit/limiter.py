"""`RateLimiter`: which limits a request or event falls under, and failing open."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable

from leadstream.server.ratelimit.backends import RateLimitBackend, RateLimitBackendError
from leadstream.server.ratelimit.policy import (
    ANONYMOUS_IP,
    HANDSHAKE,
    IP,
    ORG,
    USER,
    Limit,
    RateLimitSettings,
    Rule,
    Tier,
)
from leadstream.server.ratelimit.window import FAILED_OPEN, UNLIMITED, RateLimitDecision, decide

log = logging.getLogger(__name__)

TierOf = Callable[[str], "str | Awaitable[str]"]


async def tier_name(tier_of: TierOf, org: str) -> str:
    """What `tier_of` says of `org`, awaited when it is async."""
    name = tier_of(org)
    return await name if inspect.isawaitable(name) else name


class RateLimiter:
    """Decides whether a request or event may proceed, per user, org and IP.

    :param backend: where the counters live (`InProcessRateLimitBackend`, or
        `RedisRateLimitBackend` when several instances share them).
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

    async def check_event(
        self, org: str, user: str, ip: str | None, *, tier: str | None = None, cost: int = 1
    ) -> RateLimitDecision:
        """Count one Socket.IO event of an authenticated connection (see `check`)."""
        return await self.check(org=org, user=user, ip=ip, tier=tier, cost=cost)

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

    async def _resolve_tier(self, org: str) -> str:
        if self._tier_of is None:
            return self.settings.default_tier
        return await tier_name(self._tier_of, org)

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
