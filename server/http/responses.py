"""JSON in and out of REST handlers, with orjson."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from leadstream.server.http.errors import ApiError, invalid_fields

Model = TypeVar("Model", bound=BaseModel)


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def error_response(error: ApiError, *, headers: dict[str, str] | None = None) -> web.Response:
    """`error` as PROTOCOL.md's JSON error body, with its status."""
    return json_response(error.body(), status=error.status, headers=headers)


async def read_json(request: web.Request) -> Any:
    """The request's JSON body; 400 when it is not JSON, 413 when it is larger
    than the app's `client_max_size` (`LEADSTREAM_MAX_JSON`): aiohttp stops
    reading at the limit, so a large body never reaches memory whole."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        limit = request.client_max_size
        raise ApiError(
            413,
            "payload_too_large",
            f"JSON request bodies are limited to {limit:,} bytes",
            {"maxBytes": limit},
        ) from None
    if not raw:
        raise ApiError(400, "invalid_json", "the request body must be JSON")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the request body is not valid JSON: {exc}") from None


async def read_model(request: web.Request, model: type[Model]) -> Model:
    """The request's JSON object body validated as `model` (`read_json`); 400
    when it is not an object, 422 naming each invalid field."""
    data = await read_json(request)
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_fields(exc) from None
