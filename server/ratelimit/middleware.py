"""The REST side of rate limits: the aiohttp middleware, the `429`, and the client address.

HTTP only: `realtime/` checks events with the `RateLimiter` itself and must
not import this module.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from leadstream.server.http.errors import ApiError
from leadstream.server.http.responses import error_response
from leadstream.server.ratelimit.limiter import RateLimiter, TierOf, tier_name
from leadstream.server.ratelimit.window import RateLimitDecision

PrincipalOf = Callable[[web.Request], "tuple[str, str] | None"]


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
    details = {"scope": decision.scope, "retryAfter": decision.retry_after_seconds}
    error = ApiError(429, "rate_limited", decision.message, details)
    return error_response(error, headers=decision.headers())


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
        # A Socket.IO handshake (no `sid` yet) opens a transport: limited per address.
        if limiter.enabled and path == handshake_path and "sid" not in request.query:
            if request.method == "GET":
                decision = await limiter.check_handshake(address_of(request))
                if not decision.allowed:
                    return rate_limited_response(decision)
            return await handler(request)
        if not limiter.enabled or path in exempt_paths or path.startswith(exempt_prefixes):
            return await handler(request)
        # Everything else: per user, org and address when authenticated, else per address.
        ip = address_of(request)
        caller = principal_of(request)
        if caller is None:
            decision = await limiter.check(ip=ip)
        else:
            org, user = caller
            tier = await tier_name(tier_of, org) if tier_of is not None else None
            decision = await limiter.check(org=org, user=user, ip=ip, tier=tier)
        if not decision.allowed:
            return rate_limited_response(decision)
        response = await handler(request)
        # A streamed response has sent its headers already.
        if decision.scope is not None and not response.prepared:
            response.headers.update(decision.headers())
        return response

    return middleware
