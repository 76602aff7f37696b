"""Schemathesis over the whole REST surface of `leadstream serve`.

The description comes from the running server (`GET /api/openapi.json`);
every operation gets a fixed number of generated requests, valid and
invalid (negative mode), with a fixed seed so a CI run is reproducible.
Each answer must not be a 5xx, must use a documented status and content
type, and must match its documented schema (error bodies included).
Rate limits are off here: they are tested on their own, and a 429 would
hide what the fuzzer sends after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import hypothesis
import pytest
import requests
import schemathesis
import socketio
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from support import ServerProcess, bearer, serve_env

from leadstream.server.auth import TokenSigner
from leadstream.server.config import Settings
from leadstream.server.http.routes.openapi import openapi_document
from leadstream.server.ratelimit import RateLimitSettings

SECRET = "fuzz-secret-" + "x" * 40
# Requests per operation and phase; about 20 operations, so the run stays well under a minute.
MAX_EXAMPLES = 25
SEED = 20260101
TOKEN = TokenSigner(SECRET, default_ttl_s=6 * 3600).issue("fuzz", "fuzzer").token
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


class FuzzTarget:
    """The served app, a token for the fuzzer's org, and real records of that org."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.url = server.url
        self.token = TOKEN
        self.lead_id = ""
        self.job_id = ""
        self.conversation_id = ""

    def seed(self) -> None:
        """A few leads, a finished export and a conversation, so that answers
        holding real records are checked too."""
        headers = bearer(self.token)
        for i in range(3):
            lead = {
                "name": f"Ada {i}",
                "company": "Fuzz Inc",
                "emails": [f"ada{i}@fuzz.example"],
                "phones": ["+1 415 555 0100"],
                "tags": ["fuzz"],
                "linkedin": None,
            }
            answer = requests.post(f"{self.url}/api/leads", json=lead, headers=headers, timeout=10)
            assert answer.status_code == 201, answer.text
            self.lead_id = answer.json()["id"]
        answer = requests.post(f"{self.url}/api/exports", json={}, headers=headers, timeout=10)
        assert answer.status_code == 202, answer.text
        self.job_id = answer.json()["jobId"]
        self.conversation_id = asyncio.run(self._chat())

    async def _chat(self) -> str:
        sio = socketio.AsyncClient(reconnection=False)
        await sio.connect(self.url, auth={"token": self.token}, transports=["websocket"])
        try:
            ack = await sio.call("chat:send", {"text": "find CTOs in Berlin"}, timeout=20)
            assert ack["ok"], ack
            return ack["conversationId"]
        finally:
            await sio.disconnect()


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    folder = tmp_path_factory.mktemp("fuzz")
    data = folder / "data"
    data.mkdir(mode=0o700)
    env = serve_env(
        data, SECRET, LEADSTREAM_AUTH="dev", LEADSTREAM_PEOPLE="2000", LEADSTREAM_RATE_LIMITS="off"
    )
    server = ServerProcess(folder / "cwd", env)
    asyncio.run(server.start())
    try:
        target = FuzzTarget(server)
        target.seed()
        yield target
    finally:
        asyncio.run(server.stop())
        failures = [
            line
            for line in server.log_path.read_text(errors="replace").splitlines()
            if "Traceback" in line
        ]
        assert not failures, f"the server logged failures: {server.log_path.read_text()[-4000:]}"


# Loaded from the module, not from the served document, because schemathesis
# must know the operations when pytest collects (its lazy `from_fixture`
# loader does not run on pytest 9); tests/test_openapi.py checks that the
# served document is this one.
schema = schemathesis.openapi.from_dict(
    openapi_document(),
    config=schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True},
            "auth": {"openapi": {"bearer": {"bearer": TOKEN}}},
            "request-timeout": 10,
        }
    ),
)


@schema.parametrize()
@hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_rest_surface(case: schemathesis.Case, fuzz_target: FuzzTarget) -> None:
    case.call_and_validate(base_url=fuzz_target.url, checks=CHECKS)


@pytest.mark.parametrize(
    ("label", "parameter", "record"),
    [
        ("GET /api/leads/{id}", "id", "lead_id"),
        ("PATCH /api/leads/{id}", "id", "lead_id"),
        ("GET /api/jobs/{id}", "id", "job_id"),
        ("GET /api/conversations/{id}/messages", "id", "conversation_id"),
    ],
)
def test_answers_about_real_records_match_the_description(fuzz_target, label, parameter, record):
    """Generated ids are never found; these requests name real ones."""
    method, path = label.split(" ")
    operation = schema[path][method]
    body = {"title": "CTO"} if method == "PATCH" else None
    kwargs = {"body": body} if body is not None else {}
    case = operation.Case(path_parameters={parameter: getattr(fuzz_target, record)}, **kwargs)
    response = case.call_and_validate(
        base_url=fuzz_target.url, checks=CHECKS, headers=bearer(fuzz_target.token)
    )
    assert response.status_code == 200, response.text


@pytest.fixture
async def bare_server(tmp_path, start_server):
    """The app on an empty store, in this process (its failures do not fail
    the fuzz run's log check)."""
    settings = Settings(
        store_url=f"sqlite:///{tmp_path / 'leadstream.db'}",
        data_dir=tmp_path,
        secret=SECRET,
        people=0,
        rate_limits=RateLimitSettings(enabled=False),
    )
    return await start_server(settings)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [("multipart/form-data", b"name\nAda\n"), ("multipart/form-data; boundary=xyz", b"garbage")],
)
async def test_a_malformed_multipart_import_is_a_400(bare_server, http, content_type, body):
    headers = {**bearer(TOKEN), "Content-Type": content_type}
    async with http.post(
        bare_server.make_url("/api/leads/import"), data=body, headers=headers
    ) as response:
        answer = await response.json()
    assert response.status == 400, answer
    assert answer["error"]["code"] == "invalid_multipart"
