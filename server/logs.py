"""Structured logs: one JSON object per line, with the request or connection
each line belongs to.

Every line carries `time` (ISO-8601 UTC, milliseconds), `level`, `logger`
and `message`; a line written while a REST request is handled carries its
`request_id`, one written while a Socket.IO event is handled carries the
connection's `connection_id` (its sid). Exceptions add `exc_type` and
`traceback`; fields passed with `extra={...}` are kept as they are.

The ids live in context variables, so they follow the code that runs for a
request or event without being passed around, and tasks started from there
(an export job submitted by a route, a reply streamed after `chat:send`)
keep them: their lines name the request or connection that started them.

- `configure_logging(level, json=...)`: installs the formatter on the root
  logger (the CLI calls it once; `LEADSTREAM_LOG_FORMAT=json|text`, see
  `wants_json`: JSON unless the output is a terminal).
- `request_id_middleware()`: takes a sane `X-Request-Id` from the client or
  makes one, and answers it in the `X-Request-Id` header.
- `connection_context(sid)`: the same for the handler of one Socket.IO event.
"""

from __future__ import annotations

import logging
import re
import secrets
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TextIO

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from leadstream.store.records import iso_from_epoch

REQUEST_ID_HEADER = "X-Request-Id"
# What a client may choose as its request id: short, and nothing that could
# forge another log field or line.
SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
LOG_FORMATS = ("json", "text")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
connection_id: ContextVar[str | None] = ContextVar("connection_id", default=None)

# Attributes every LogRecord has; anything else on a record came from `extra`.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "request_id",
    "connection_id",
    "taskName",
}


class ContextIds(logging.Filter):
    """Copies the current request and connection ids onto each record (as
    `request_id` / `connection_id`, None outside a request or event), so
    every formatter can show them."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        record.connection_id = connection_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": iso_from_epoch(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, var in (("request_id", request_id), ("connection_id", connection_id)):
            # A record that did not pass `ContextIds` still gets the current ids.
            value = getattr(record, key, None) or var.get()
            if value is not None:
                line[key] = value
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and key not in line:
                line[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            line["exc_type"] = record.exc_info[0].__name__
            line["traceback"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            line["traceback"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return orjson.dumps(line, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


class TextFormatter(logging.Formatter):
    """The human format, with ` [request_id=...]` / ` [connection_id=...]`
    after the message when there is one."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        for key in ("request_id", "connection_id"):
            value = getattr(record, key, None)
            if value is not None:
                text += f" [{key}={value}]"
        return text


def wants_json(log_format: str | None, stream: TextIO) -> bool:
    """Whether to log JSON: `log_format` is `LEADSTREAM_LOG_FORMAT`
    (`json` or `text`); unset or empty means JSON unless `stream` is a
    terminal (people read terminals, collectors read everything else).

    :raises ValueError: for any other format name.
    """
    if not log_format:
        return not stream.isatty()
    normalized = log_format.strip().lower()
    if normalized not in LOG_FORMATS:
        raise ValueError(f"LEADSTREAM_LOG_FORMAT must be 'json' or 'text', not {log_format!r}")
    return normalized == "json"


def configure_logging(
    level: int | str = logging.INFO, *, json: bool, stream: TextIO | None = None
) -> logging.Handler:
    """Send every log line to `stream`, as JSON or as text, with the request
    and connection ids. Replaces the root logger's handlers, so calling it
    again reconfigures rather than doubling lines.

    :param level: the root level (`"INFO"`, `logging.DEBUG`...).
    :param json: one JSON object per line (else the human text format).
    :param stream: where lines go [stderr].
    :returns: the installed handler.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    handler.addFilter(ContextIds())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler


def new_request_id() -> str:
    return secrets.token_hex(8)


def request_id_middleware() -> Middleware:
    """Sets the request id for the request's log lines (the client's
    `X-Request-Id` when it is sane, else a new one) and answers it in the
    `X-Request-Id` header. Put it first, so every other middleware's lines
    carry it.

    The id is not reset afterwards: aiohttp runs each request in its own task
    with a copy of the context, and its access log line, written after the
    handler returns, should carry the id too.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        offered = request.headers.get(REQUEST_ID_HEADER, "")
        rid = offered if SANE_REQUEST_ID.match(offered) else new_request_id()
        request_id.set(rid)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers[REQUEST_ID_HEADER] = rid
            raise
        if not response.prepared:  # a websocket or stream answered its headers already
            response.headers[REQUEST_ID_HEADER] = rid
        return response

    return middleware


@contextmanager
def connection_context(sid: str) -> Iterator[None]:
    """Log lines written inside carry `connection_id=sid` and no request id
    (wrap the handler of one Socket.IO event with it). Without the reset, an
    event would inherit the id of the HTTP request that carried it: the
    websocket upgrade, alive as long as the connection, or one long poll."""
    connection_token = connection_id.set(sid)
    request_token = request_id.set(None)
    try:
        yield
    finally:
        request_id.reset(request_token)
        connection_id.reset(connection_token)
