"""Structured logs: every line one JSON object, with the request id of the
REST request (taken from `X-Request-Id` or made, and answered) or the
connection id of the Socket.IO event it was written for."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from support import bearer, settings_with

from leadstream.server.http.app import create_app
from leadstream.server.logs import configure_logging, connection_context, wants_json

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class Lines:
    """What the configured root handler wrote."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    def json(self) -> list[dict]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def text(self) -> list[str]:
        return self.stream.getvalue().splitlines()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture
def json_lines(restore_logging) -> Lines:
    stream = io.StringIO()
    configure_logging("INFO", json=True, stream=stream)
    return Lines(stream)


def app_with_probes(settings) -> web.Application:
    """The app with a route that fails."""
    app = create_app(settings)

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("the probe failed on purpose")

    app.router.add_get("/probe/boom", boom)
    return app


@pytest.fixture
async def probe_server(settings, serve_app) -> TestServer:
    # Every store call is "slow": each request writes a line from inside the app.
    return await serve_app(app_with_probes(settings_with(settings, slow_query_ms=0)))


async def test_rest_lines_carry_the_request_id(json_lines, probe_server, token, http):
    response = await http.get(
        probe_server.make_url("/api/leads"),
        headers={**bearer(token()), "X-Request-Id": "client-chosen.42"},
    )
    assert response.status == 200
    assert response.headers["X-Request-Id"] == "client-chosen.42"
    lines = json_lines.json()
    mine = [line for line in lines if line.get("request_id") == "client-chosen.42"]
    assert any(line["message"].startswith("slow store call") for line in mine), lines
    for line in lines:
        assert TIME.match(line["time"]) and line["level"] and line["logger"]
        assert "message" in line

    forged = await http.get(
        probe_server.make_url("/healthz"), headers={"X-Request-Id": 'x", "level": "forged'}
    )
    made = forged.headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{16}", made)

    failed = await http.get(probe_server.make_url("/probe/boom"))
    assert failed.status == 500
    rid = failed.headers["X-Request-Id"]
    of_request = {
        line["logger"]: line for line in json_lines.json() if line.get("request_id") == rid
    }
    # aiohttp's access line is written after the handler, and carries the id too.
    assert set(of_request) == {"leadstream.server.http.middleware", "aiohttp.access"}
    error = of_request["leadstream.server.http.middleware"]
    assert error["level"] == "ERROR" and error["message"] == "GET /probe/boom failed"
    assert error["exc_type"] == "RuntimeError"
    assert "Traceback (most recent call last)" in error["traceback"]
    assert "the probe failed on purpose" in error["traceback"]


async def test_socket_event_lines_carry_the_connection_id(json_lines, probe_server, token, connect):
    client = await connect(probe_server, token())
    sid = client.sio.get_sid("/")
    before = len(json_lines.json())
    assert (await client.call("leads:subscribe", {"since": 0}))["ok"]
    # Every store call is slow here, so the event's own handler wrote lines.
    lines = [line for line in json_lines.json()[before:] if line.get("connection_id") == sid]
    assert any(line["message"].startswith("slow store call") for line in lines), lines
    # The websocket upgrade's request id does not leak into the event's lines.
    assert all("request_id" not in line for line in lines)


def test_extra_fields_and_text_format(restore_logging):
    stream = io.StringIO()
    configure_logging("DEBUG", json=True, stream=stream)
    logging.getLogger("leadstream.test").debug("with extra", extra={"jobId": "job_1", "n": 3})
    (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert line["jobId"] == "job_1" and line["n"] == 3 and line["level"] == "DEBUG"

    text = io.StringIO()
    configure_logging("INFO", json=False, stream=text)
    with connection_context("sid-1"):
        logging.getLogger("leadstream.test").info("for humans")
    logging.getLogger("leadstream.test").debug("below the level")
    (human,) = text.getvalue().splitlines()
    assert human.endswith("INFO leadstream.test: for humans [connection_id=sid-1]")
    assert len(logging.getLogger().handlers) == 1  # reconfiguring replaced, not added


def test_log_format_choice():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert wants_json(None, io.StringIO()) is True
    assert wants_json("", Terminal()) is False
    assert wants_json("json", Terminal()) is True
    assert wants_json(" TEXT ", io.StringIO()) is False
    with pytest.raises(ValueError, match="LEADSTREAM_LOG_FORMAT"):
        wants_json("yaml", sys.stderr)
