"""`GET /api/openapi.json`: served without a token, and describing exactly
the routes the app registers (so the description cannot drift from them)."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis

from leadstream.server.config import Settings
from leadstream.server.http.app import create_app
from leadstream.server.http.middleware import PUBLIC
from leadstream.server.http.routes.dev import DevTokenBody
from leadstream.server.http.routes.exports import ExportBody
from leadstream.server.http.routes.openapi import OPERATIONS, REF, openapi_document
from leadstream.server.lead_fields import LeadCreate, LeadFields

# Not REST: the Socket.IO transport and static files.
UNDESCRIBED_PREFIXES = ("/socket.io/", "/static")


@pytest.fixture
def bare_settings(tmp_path: Path) -> Settings:
    """An empty store and no directory: enough to build and serve the app."""
    return Settings(
        store_url=f"sqlite:///{tmp_path / 'leadstream.db'}",
        data_dir=tmp_path,
        secret="openapi-secret-" + "x" * 32,
        people=0,
    )


def registered_operations(settings: Settings) -> set[tuple[str, str]]:
    """(method, path template) of every route of the app, HEAD aside (aiohttp adds
    one per GET)."""
    app = create_app(settings)
    operations = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method in ("HEAD", "OPTIONS") or path.startswith(UNDESCRIBED_PREFIXES):
            continue
        operations.add((route.method.lower(), path))
    return operations


def described_operations(document: dict) -> set[tuple[str, str]]:
    return {(method, path) for path, item in document["paths"].items() for method in item}


def test_every_registered_route_is_described_and_nothing_else(bare_settings):
    registered = registered_operations(bare_settings)
    described = described_operations(openapi_document())
    assert registered - described == set(), "routes missing from server/http/routes/openapi.py"
    assert described - registered == set(), "described routes the app does not register"


@pytest.mark.parametrize("model", [DevTokenBody, ExportBody, LeadCreate, LeadFields])
def test_request_bodies_are_the_handlers_own_models(model):
    schemas = openapi_document()["components"]["schemas"]
    own = model.model_json_schema(ref_template=REF)
    own.pop("$defs", None)
    assert schemas[model.__name__] == own


def test_every_authenticated_operation_answers_401_with_the_error_body():
    document = openapi_document()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if operation.get("security") == []:
                continue
            reply = operation["responses"].get("401")
            assert reply is not None, f"{method.upper()} {path} does not document 401"
            schema = reply["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}


async def test_served_without_a_token_and_loadable_by_schemathesis(
    bare_settings, start_server, http
):
    server = await start_server(bare_settings)
    async with http.get(server.make_url("/api/openapi.json")) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        document = await response.json()
    assert document == openapi_document()
    assert document["openapi"] == "3.1.0"
    schema = schemathesis.openapi.from_dict(document)
    labels = {result.ok().label for result in schema.get_all_operations() if hasattr(result, "ok")}
    assert "GET /api/leads/{id}" in labels
    assert len(labels) == len(described_operations(document))


def test_the_api_paths_documented_public_are_the_ones_auth_lets_through():
    """The auth middleware keeps its own list (the routes import it, so it cannot
    import the document): the two must not drift apart."""
    documented = {op.path for op in OPERATIONS if op.public and op.path.startswith("/api/")}
    assert documented == set(PUBLIC)
