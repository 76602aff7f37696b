"""`GET /api/openapi.json`: the OpenAPI 3.1 description of every REST route.

Request bodies are described by the same pydantic models the handlers
validate with (`model_json_schema()`), so a body's shape is written once.
Answers are built by `to_wire()` methods, so their shapes are written here as
models; the schemathesis fuzz test (tests/test_fuzz_rest.py) checks every
answer against them, and tests/test_openapi.py checks that every route the
app registers is described here.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from leadstream import __version__
from leadstream.server.http.routes.dev import DevTokenBody
from leadstream.server.http.routes.exports import ExportBody
from leadstream.server.http.routes.paging import MAX_PAGE
from leadstream.server.lead_fields import LeadCreate, LeadFields
from leadstream.store.cursors import SORTS

routes = web.RouteTableDef()

OPENAPI_PATH = "/api/openapi.json"
REF = "#/components/schemas/{model}"


# -- answer shapes (what the handlers' `to_wire()` produce) -------------------


class _Answer(BaseModel):
    # Fields may be added in later protocols; clients ignore what they do not know.
    model_config = ConfigDict(extra="allow")


class ErrorDetail(_Answer):
    code: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    message: str
    details: dict[str, Any] | None = None


class ErrorBody(_Answer):
    """Every 4xx/5xx answer: `{"error": {"code", "message", "details"?}}`."""

    error: ErrorDetail


class Info(_Answer):
    name: str
    version: str
    protocol: int
    store: str
    model: str
    provider: str
    redis: bool


class Health(_Answer):
    status: Literal["ok"]


class Readiness(_Answer):
    status: str
    checks: dict[str, str]


class DevToken(_Answer):
    token: str
    org: str
    user: str
    expiresAt: str


class Lead(_Answer):
    id: str
    personId: str
    source: str
    name: str
    title: str | None
    company: str | None
    industry: str | None = None
    location: str | None = None
    emails: list[str]
    phones: list[str]
    linkedin: str | None = None
    tags: list[str]
    notes: str | None = Field(None, description="free text, at most 4,000 characters")
    sources: list[str] = Field(description="every source that contributed to the lead")
    createdAt: str
    updatedAt: str


class LeadPage(_Answer):
    leads: list[Lead]
    nextCursor: str | None
    version: int = Field(ge=0)


class LeadStats(_Answer):
    total: int = Field(ge=0)
    withEmail: int = Field(ge=0)
    withPhone: int = Field(ge=0)
    withBoth: int = Field(ge=0)


class JobAccepted(_Answer):
    jobId: str


class Job(_Answer):
    jobId: str
    kind: Literal["export", "import"]
    status: Literal["queued", "running", "done", "failed"]
    done: int = Field(
        ge=0,
        description="export: rows written; import: bytes of the file read "
        "(the `bytes` of its latest `import:progress`)",
    )
    total: int | None = Field(
        None, description="export: rows to write; import: the size of the file in bytes"
    )
    result: dict[str, Any] | None = None
    error: ErrorDetail | None = None


class Conversation(_Answer):
    id: str
    title: str
    createdAt: str
    updatedAt: str


class ConversationPage(_Answer):
    conversations: list[Conversation]
    nextCursor: str | None


class Message(_Answer):
    id: str
    role: Literal["user", "assistant"]
    text: str
    toolCalls: list[dict[str, Any]] | None = None
    status: str | None = None
    createdAt: str


class MessagePage(_Answer):
    messages: list[Message]
    nextCursor: str | None


class UsageTotals(_Answer):
    replies: int = Field(ge=0)
    promptTokens: int = Field(ge=0)
    completionTokens: int = Field(ge=0)
    costUsd: float = Field(ge=0)
    credits: int = Field(ge=0)


class UsageDay(UsageTotals):
    date: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")


class Usage(_Answer):
    from_: str = Field(alias="from")
    to: str
    days: list[UsageDay]
    totals: UsageTotals


# -- the operation table ------------------------------------------------------

Body = type[BaseModel] | Literal["csv", "html", "prometheus", "openapi"] | None


@dataclass(frozen=True)
class Reply:
    """One documented answer of an operation."""

    description: str
    body: Body = ErrorBody


@dataclass(frozen=True)
class Operation:
    """One method on one path, as OpenAPI describes it."""

    method: str
    path: str
    summary: str
    replies: dict[int, Reply]
    query: tuple[dict[str, Any], ...] = ()
    body: type[BaseModel] | None = None
    public: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


LIMIT = _query(
    "limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}, "page size (outside: 400)"
)
CURSOR = _query("cursor", {"type": "string"}, "`nextCursor` of the previous page")
SEARCH_TEXT = {"type": "string", "maxLength": 200}
LEAD_QUERY = (
    LIMIT,
    CURSOR,
    _query("sort", {"type": "string", "enum": list(SORTS)}, "order [createdAt:desc]"),
    _query("hasPhone", {"type": "boolean"}, "only leads with a phone"),
    _query("hasEmail", {"type": "boolean"}, "only leads with an email"),
    _query("q", SEARCH_TEXT, "search over name, company, title, email, phone"),
    _query("company", SEARCH_TEXT, "company name"),
    _query("tag", SEARCH_TEXT, "one tag"),
)

UNAUTHORIZED = Reply("no, bad or expired bearer token")
RATE_LIMITED = Reply("rate limited; `Retry-After` says when to retry")
NOT_FOUND = Reply("not in the caller's org (or not the caller's)")
BAD_JSON = Reply("the body is not a JSON object (`invalid_json`)")
TOO_LARGE_JSON = Reply("the JSON body is larger than LEADSTREAM_MAX_JSON (`payload_too_large`)")
INVALID_FIELDS = Reply("valid JSON with invalid fields (`invalid_fields`, details.fields)")
BAD_QUERY = Reply(
    "a bad query parameter (`invalid_limit`, `invalid_cursor`, `invalid_sort`, "
    "`invalid_filter`, `query_too_broad`)"
)
TOO_MANY_JOBS = Reply(
    "too many queued or running jobs of the user (`too_many_jobs`) or rate limited"
)
AUTHED = {401: UNAUTHORIZED, 429: RATE_LIMITED}
JSON_BODY = {400: BAD_JSON, 413: TOO_LARGE_JSON, 422: INVALID_FIELDS}
LEAD_ID = "/api/leads/{id}"

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "get",
        "/",
        "the web page",
        {200: Reply("the chat page", "html"), 429: RATE_LIMITED},
        public=True,
    ),
    Operation("get", "/healthz", "liveness", {200: Reply("alive", Health)}, public=True),
    Operation(
        "get",
        "/readyz",
        "readiness of the store, Redis (if configured) and the model",
        {200: Reply("ready", Readiness), 503: Reply("a part failed", Readiness)},
        public=True,
    ),
    Operation(
        "get", "/metrics", "Prometheus metrics", {200: Reply("metrics", "prometheus")}, public=True
    ),
    Operation(
        "get",
        "/api/info",
        "server name, version, protocol and configuration labels",
        {200: Reply("the server", Info), 429: RATE_LIMITED},
        public=True,
    ),
    Operation(
        "get",
        OPENAPI_PATH,
        "this description",
        {200: Reply("the OpenAPI 3.1 document", "openapi"), 429: RATE_LIMITED},
        public=True,
    ),
    Operation(
        "post",
        "/api/dev/token",
        "a token for any org and user (dev auth mode only; else 404)",
        {
            200: Reply("a token", DevToken),
            404: Reply("dev auth mode is off"),
            429: RATE_LIMITED,
            **JSON_BODY,
        },
        body=DevTokenBody,
        public=True,
    ),
    Operation(
        "get",
        "/api/leads",
        "one page of the org's leads (keyset pagination)",
        {200: Reply("a page", LeadPage), 400: BAD_QUERY, **AUTHED},
        query=LEAD_QUERY,
    ),
    Operation(
        "post",
        "/api/leads",
        "create a lead, or merge it into the org's lead of the same person (same "
        "personId, or a normalised email, phone or LinkedIn URL in common)",
        {
            201: Reply("created", Lead),
            200: Reply("merged into an existing lead (the change feed says `update`)", Lead),
            **JSON_BODY,
            **AUTHED,
        },
        body=LeadCreate,
    ),
    Operation(
        "get",
        "/api/leads/stats",
        "lead counts of the org",
        {200: Reply("the counts", LeadStats), **AUTHED},
    ),
    Operation("get", LEAD_ID, "one lead", {200: Reply("the lead", Lead), 404: NOT_FOUND, **AUTHED}),
    Operation(
        "patch",
        LEAD_ID,
        "change some fields of a lead",
        {200: Reply("the changed lead", Lead), 404: NOT_FOUND, **JSON_BODY, **AUTHED},
        body=LeadFields,
    ),
    Operation(
        "delete", LEAD_ID, "delete a lead", {204: Reply("deleted", None), 404: NOT_FOUND, **AUTHED}
    ),
    Operation(
        "post",
        "/api/leads/import",
        "queue the import of a CSV file (`text/csv` body or multipart `file`)",
        {
            202: Reply("queued", JobAccepted),
            400: Reply("empty body or no file part (`empty_body`, `missing_file`)"),
            413: Reply("larger than LEADSTREAM_MAX_UPLOAD (`too_large`)"),
            415: Reply("neither text/csv nor multipart/form-data"),
            401: UNAUTHORIZED,
            429: TOO_MANY_JOBS,
        },
        extra={
            "requestBody": {
                "required": True,
                "content": {
                    "text/csv": {"schema": {"type": "string"}},
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file"],
                            "properties": {
                                "file": {"type": "string", "contentMediaType": "text/csv"}
                            },
                        }
                    },
                },
            }
        },
    ),
    Operation(
        "post",
        "/api/exports",
        "queue a CSV export of the leads matching a filter",
        {
            202: Reply("queued", JobAccepted),
            **JSON_BODY,
            400: Reply(
                "the body is not a JSON object (`invalid_json`), or its `q` is too broad "
                "(`query_too_broad`)"
            ),
            401: UNAUTHORIZED,
            409: Reply(
                "the org's export files fill their quota (`export_quota_exceeded`, "
                "details.retryAfterS)"
            ),
            429: TOO_MANY_JOBS,
        },
        body=ExportBody,
    ),
    Operation(
        "get",
        "/api/jobs/{id}",
        "an export or import job of the caller",
        {200: Reply("the job", Job), 404: NOT_FOUND, **AUTHED},
    ),
    Operation(
        "get",
        "/api/exports/{id}/download",
        "the export's CSV file, with a bearer token or the signed link of `export:ready`",
        {
            200: Reply("the file", "csv"),
            403: Reply("the signed link is invalid or has expired"),
            404: Reply("not the caller's export, or its file is not ready or no longer kept"),
            **AUTHED,
        },
        query=(
            _query("expires", {"type": "string"}, "expiry of a signed link (epoch seconds)"),
            _query("signature", {"type": "string"}, "signature of a signed link"),
        ),
        extra={"security": [{"bearer": []}, {}]},
    ),
    Operation(
        "get",
        "/api/conversations",
        "the caller's conversations, newest first",
        {200: Reply("a page", ConversationPage), 400: BAD_QUERY, **AUTHED},
        query=(LIMIT, CURSOR),
    ),
    Operation(
        "get",
        "/api/conversations/{id}/messages",
        "the messages of one of the caller's conversations",
        {200: Reply("a page", MessagePage), 400: BAD_QUERY, 404: NOT_FOUND, **AUTHED},
        query=(LIMIT, CURSOR),
    ),
    Operation(
        "get",
        "/api/usage",
        "the org's use per UTC day: replies, tokens, cost, lookup credits (zeros included)",
        {
            200: Reply("every day of the range", Usage),
            400: Reply(
                "`invalid_date` (not YYYY-MM-DD), `invalid_range` (from after to) or "
                "`range_too_long` (over LEADSTREAM_USAGE_MAX_DAYS, details.maxDays)"
            ),
            **AUTHED,
        },
        query=(
            _query("from", {"type": "string", "format": "date"}, "first day [29 days before to]"),
            _query("to", {"type": "string", "format": "date"}, "last day [today, UTC]"),
        ),
    ),
)

MEDIA = {
    "csv": ("text/csv", {"type": "string"}),
    "html": ("text/html", {"type": "string"}),
    "prometheus": ("text/plain", {"type": "string"}),
    "openapi": ("application/json", {"type": "object", "required": ["openapi", "paths"]}),
}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of `OPERATIONS` (a fresh copy each call)."""
    return _build()


@functools.cache
def _document_bytes() -> bytes:
    return orjson.dumps(_build())


def _build() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Leadstream",
            "version": __version__,
            "description": "The REST part of the Leadstream wire protocol (PROTOCOL.md). "
            'Errors answer `{"error": {"code", "message", "details"?}}`.',
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`leadstream token --org ORG --user USER`",
                }
            },
        },
    }


def _operation(op: Operation, schemas: dict[str, Any]) -> dict[str, Any]:
    name = re.sub(r"[^a-z0-9]+", "_", op.path.lower()).strip("_") or "index"
    described: dict[str, Any] = {"operationId": f"{op.method}_{name}", "summary": op.summary}
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _path_params(op.path)
    ]
    params += list(op.query)
    if params:
        described["parameters"] = params
    if op.body is not None:
        described["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(op.body, schemas)}},
        }
    if op.public:
        described["security"] = []
    described["responses"] = {
        str(status): _response(reply, schemas) for status, reply in sorted(op.replies.items())
    }
    described.update(op.extra)
    return described


def _response(reply: Reply, schemas: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": reply.description}
    if isinstance(reply.body, str):
        media, schema = MEDIA[reply.body]
        answer["content"] = {media: {"schema": schema}}
    elif reply.body is not None:
        answer["content"] = {"application/json": {"schema": _ref(reply.body, schemas)}}
    return answer


def _ref(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, str]:
    """Put `model`'s JSON Schema (and the models it uses) into `schemas`."""
    schema = model.model_json_schema(ref_template=REF)
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema
    return {"$ref": REF.format(model=model.__name__)}


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


@routes.get(OPENAPI_PATH)
async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=_document_bytes(), content_type="application/json")
