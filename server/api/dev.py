"""`POST /api/dev/token`: tokens for anyone, only in dev auth mode."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ValidationError

from leadstream.server.appkeys import SETTINGS, SIGNER
from leadstream.server.auth import IDENTIFIER
from leadstream.server.errors import ApiError, invalid_fields
from leadstream.server.responses import json_response, read_json
from leadstream.store.records import iso_from_epoch

routes = web.RouteTableDef()


class DevTokenBody(BaseModel):
    org: str
    user: str


@routes.post("/api/dev/token")
async def dev_token(request: web.Request) -> web.Response:
    if request.app[SETTINGS].auth_mode != "dev":
        raise ApiError(404, "not_found", "dev tokens are off (set LEADSTREAM_AUTH=dev to allow)")
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
