"""The request middlewares of this package: error bodies, request timing, bearer auth.

Every HTTP middleware of the server has one shape: a factory function
`<concern>_middleware(...)` takes what the middleware needs (a signer, the
metrics, a limiter...) and returns a plain `@web.middleware` function, so
nothing is read from globals or from the app at request time. One without
dependencies still has a factory, so the chain in `server/http/app.py`
(`middleware_chain`, where the order and its reasons are listed) is one list
of calls. The other middlewares: `request_id_middleware` (server/logs.py),
`cors_middleware` (cors.py), `compression_middleware` (compression.py),
`rate_limit_middleware` (server/ratelimit).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from leadstream.server.auth import AuthError, Principal, TokenSigner
from leadstream.server.http.errors import ApiError
from leadstream.server.http.responses import error_response
from leadstream.server.jobs.queue import JobRefused
from leadstream.server.metrics import CLIENT_CLOSED, Metrics, route_of
from leadstream.store.errors import InvalidCursor, QueryTooBroad

log = logging.getLogger(__name__)

# Paths answered without a bearer token (downloads check their own signature).
PUBLIC = ("/api/info", "/api/dev/token", "/api/openapi.json")
STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_fields",
    429: "rate_limited",
}
PRINCIPAL = web.RequestKey("principal", Principal)
SIGNED_DOWNLOAD = re.compile(r"^/api/exports/[^/]+/download$")


def error_middleware() -> Middleware:
    """Turns every failure below it into PROTOCOL.md's JSON error body: an
    `ApiError` as it says, a refused job with its status, a store's bad
    query or cursor as a 400, an aiohttp HTTP error by its status, anything
    else as a logged `500 internal_error`. Inside compression (error bodies are
    compressed too), outside rate limits and auth (their refusals get bodies)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return error_response(exc)
        except JobRefused as exc:  # too many jobs, or the export quota is full
            return error_response(ApiError(exc.status, exc.code, exc.message, exc.details))
        except QueryTooBroad as exc:
            return error_response(ApiError(400, exc.code, exc.message))
        except InvalidCursor as exc:
            return error_response(ApiError(400, "invalid_cursor", str(exc)))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = STATUS_CODES.get(exc.status, "error")
            return error_response(
                ApiError(exc.status, code, exc.reason),
                headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"},
            )
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return error_response(ApiError(500, "internal_error", "the server failed"))

    return middleware


def metrics_middleware(metrics: Metrics) -> Middleware:
    """Times every request by its route's canonical path and counts error
    statuses (`Metrics.request_finished`); a request whose client went away
    counts as 499. Outside compression and errors, so their time and the
    final status are what is recorded."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = CLIENT_CLOSED
            raise
        finally:
            metrics.request_finished(
                request.method, route_of(request), status, time.perf_counter() - started
            )

    return middleware


def auth_middleware(signer: TokenSigner) -> Middleware:
    """Every `/api/` path but the public ones (and signed export downloads)
    needs `Authorization: Bearer <token>` signed by `signer`; the caller is
    kept on the request (`principal(request)`). Innermost: the rate limiter
    may have verified the token already (`bearer_principal`)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        needs_token = path.startswith("/api/") and path not in PUBLIC
        if needs_token and PRINCIPAL not in request and not _is_signed_download(request):
            token = _bearer_token(request)
            if token is None:
                raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>")
            try:
                request[PRINCIPAL] = signer.verify(token)
            except AuthError as exc:
                raise ApiError(401, "unauthorized", exc.message) from None
        return await handler(request)

    return middleware


def bearer_principal(request: web.Request, signer: TokenSigner) -> Principal | None:
    """The request's principal when it carries a valid bearer token (kept on
    the request, so auth does not verify it twice), else None."""
    token = _bearer_token(request)
    if token is None:
        return None
    try:
        caller = signer.verify(token)
    except AuthError:
        return None
    request[PRINCIPAL] = caller
    return caller


def principal(request: web.Request) -> Principal:
    """The caller of an authenticated route."""
    return request[PRINCIPAL]


def _bearer_token(request: web.Request) -> str | None:
    """The token of `Authorization: Bearer <token>`, or None when there is none."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _is_signed_download(request: web.Request) -> bool:
    """An export download by its signed link (the route checks the signature)."""
    return SIGNED_DOWNLOAD.match(request.path) is not None and "signature" in request.query
