"""`POST /api/dev/token`: tokens for anyone, only in dev auth mode."""

from __future__ import annotations

import ipaddress

from aiohttp import web
from pydantic import BaseModel, ValidationError

from leadstream.server.auth import IDENTIFIER
from leadstream.server.http.appkeys import SETTINGS, SIGNER
from leadstream.server.http.errors import ApiError, invalid_fields
from leadstream.server.http.responses import json_response, read_json
from leadstream.store.records import iso_from_epoch

routes = web.RouteTableDef()


class DevTokenBody(BaseModel):
    org: str
    user: str


@routes.post("/api/dev/token")
async def dev_token(request: web.Request) -> web.Response:
    if request.app[SETTINGS].auth_mode != "dev":
        raise ApiError(404, "not_found", "dev tokens are off (set LEADSTREAM_AUTH=dev to allow)")
    if not is_rebinding_safe_host(request.host):
        raise ApiError(
            403,
            "forbidden",
            "dev tokens are only given to requests for localhost or an IP address "
            f"(this one asked for host {request.host!r})",
        )
    try:
        body = DevTokenBody.model_validate(await read_json(request))
    except ValidationError as exc:
        raise invalid_fields(exc) from None
    for field, value in (("org", body.org), ("user", body.user)):
        if not IDENTIFIER.match(value):
            raise ApiError(
                422, "invalid_fields", f"{field}: 1-64 letters, digits, '_', '.', '@' or '-'"
            )
    issued = request.app[SIGNER].issue(body.org, body.user)
    return json_response(
        {
            "token": issued.token,
            "org": issued.org,
            "user": issued.user,
            "expiresAt": iso_from_epoch(issued.expires_at),
        }
    )


def is_rebinding_safe_host(host: str) -> bool:
    """Whether a `Host` header names this machine in a way DNS rebinding cannot
    fake: an IP address literal, or `localhost` (and `*.localhost`, which
    browsers resolve to loopback themselves). A page on evil.example whose name
    was re-pointed at 127.0.0.1 still sends `Host: evil.example`."""
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
