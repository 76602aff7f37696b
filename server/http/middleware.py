"""Request middleware: error bodies for every failure, and bearer auth."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from leadstream.server.auth import AuthError, Principal, TokenSigner
from leadstream.server.http.appkeys import SIGNER
from leadstream.server.http.errors import ApiError
from leadstream.server.http.responses import json_response

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Paths answered without a bearer token (downloads check their own signature).
PUBLIC = ("/api/info", "/api/dev/token", "/api/openapi.json")
STATUS_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
    422: "invalid_fields", 429: "rate_limited",
}  # fmt: skip
PRINCIPAL = web.RequestKey("principal", Principal)
SIGNED_DOWNLOAD = re.compile(r"^/api/exports/[^/]+/download$")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return json_response(exc.body(), status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = STATUS_CODES.get(exc.status, "error")
        return json_response(
            {"error": {"code": code, "message": exc.reason}}, status=exc.status,
            headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"},
        )  # fmt: skip
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        body = {"error": {"code": "internal_error", "message": "the server failed"}}
        return json_response(body, status=500)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every `/api/` path but the public ones needs `Authorization: Bearer`."""
    path = request.path
    needs_token = path.startswith("/api/") and path not in PUBLIC
    if needs_token and PRINCIPAL not in request and not _is_signed_download(request):
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>")
        try:
            request[PRINCIPAL] = request.app[SIGNER].verify(token.strip())
        except AuthError as exc:
            raise ApiError(401, "unauthorized", exc.message) from None
    return await handler(request)


def bearer_principal(request: web.Request, signer: TokenSigner) -> Principal | None:
    """The request's principal when it carries a valid bearer token (kept on
    the request, so auth does not verify it twice), else None."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    try:
        caller = signer.verify(token.strip())
    except AuthError:
        return None
    request[PRINCIPAL] = caller
    return caller


def principal(request: web.Request) -> Principal:
    """The caller of an authenticated route."""
    return request[PRINCIPAL]


def _is_signed_download(request: web.Request) -> bool:
    """An export download by its signed link (the route checks the signature)."""
    return SIGNED_DOWNLOAD.match(request.path) is not None and "signature" in request.query
