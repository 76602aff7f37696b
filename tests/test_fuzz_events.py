"""Hypothesis over every client event payload, sent by a real python-socketio
client to the running app.

Properties, for any payload: the ack is `{ok: true, ...}` with the event's
fields or `{ok: false, error: {code, message}}` with a code PROTOCOL.md
knows; the connection keeps working (a valid call right after succeeds);
a refused payload stores nothing. Examples are bounded and derandomized so
CI runs the same cases every time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import socketio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import ServerProcess, bearer, serve_env

from leadstream.server.auth import TokenSigner

MAX_TEXT = 300
EXAMPLES = 60
SECRET = "events-secret-" + "x" * 40
TOKEN = TokenSigner(SECRET, default_ttl_s=6 * 3600).issue("fuzz", "fuzzer").token
# Every refusal code a client event may answer (PROTOCOL.md); never `internal_error`.
KNOWN_CODES = {
    "invalid_payload",
    "not_found",
    "text_empty",
    "text_too_long",
    "conversation_busy",
    "rate_limited",
    "too_many_replies",
    "unauthorized",
}
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# -- strategies ---------------------------------------------------------------

HUGE_INTS = st.sampled_from([2**64, 2**64 - 1, 2**63, -(2**63) - 1, 2**53 + 1, -1, 10**30])
UNICODE = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=0, max_size=40)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | HUGE_INTS
    | st.floats(allow_nan=False, allow_infinity=False)
    | UNICODE
)
JUNK = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(UNICODE, inner, max_size=4),
    max_leaves=12,
)
IDS = st.sampled_from(["", "cv_nope", "mg_nope", "x" * 101]) | UNICODE
TEXTS = (
    UNICODE
    | st.sampled_from(["   ", "\u200b", "find CTOs in Berlin", "x" * (MAX_TEXT + 1)])
    | st.text(min_size=MAX_TEXT - 2, max_size=MAX_TEXT + 2)
)
OFFSETS = st.integers(min_value=-5, max_value=2**63 - 1) | HUGE_INTS


def payloads(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Objects with any subset of `fields`, each valid-typed or junk, plus unknown
    keys, and now and then not an object at all."""
    field_values = {name: strategy | JUNK for name, strategy in fields.items()}
    objects = st.fixed_dictionaries({}, optional=field_values).flatmap(
        lambda known: st.dictionaries(UNICODE, JUNK, max_size=2).map(lambda extra: extra | known)
    )
    return st.one_of(objects, objects, JUNK)


EVENTS: dict[str, st.SearchStrategy[Any]] = {
    "chat:send": payloads({"conversationId": IDS, "text": TEXTS, "clientMessageId": IDS}),
    "chat:stop": payloads({"conversationId": IDS}),
    "chat:resume": payloads({"conversationId": IDS, "messageId": IDS, "offset": OFFSETS}),
    "leads:subscribe": payloads({"since": OFFSETS}),
    "leads:unsubscribe": payloads({}),
}
# The fields each event's success ack carries (PROTOCOL.md).
SUCCESS_FIELDS = {
    "chat:send": {"conversationId": str, "messageId": str},
    "chat:stop": {"stopped": bool},
    "chat:resume": {"text": str, "done": bool},
    "leads:subscribe": {"version": int, "changes": list, "reset": bool},
    "leads:unsubscribe": {},
}


# -- the app ------------------------------------------------------------------


@pytest.fixture(scope="module")
def events_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """`leadstream serve` as its own process: the server decodes packets with
    its own JSON codec, as it does for any outside client."""
    folder = tmp_path_factory.mktemp("fuzz-events")
    data = folder / "data"
    data.mkdir(mode=0o700)
    env = serve_env(
        data,
        SECRET,
        LEADSTREAM_PEOPLE="0",
        LEADSTREAM_MAX_TEXT=str(MAX_TEXT),
        LEADSTREAM_EVENTS_PER_S="100000",
        LEADSTREAM_EVENTS_BURST="100000",
        LEADSTREAM_RATE_LIMITS="off",
    )
    server = ServerProcess(folder / "cwd", env)
    asyncio.run(server.start())
    try:
        yield server
    finally:
        asyncio.run(server.stop())


@pytest.fixture
async def client(
    events_target: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[socketio.AsyncClient]:
    # python-socketio keeps one JSON module for every packet of the process, and
    # an app built by another test sets the server's (orjson, which refuses ints
    # past 64 bits); this client speaks the standard library's JSON, as a browser would.
    monkeypatch.setattr(socketio.packet.Packet, "json", json)
    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(events_target.url, auth={"token": TOKEN}, transports=["websocket"])
    yield sio
    await sio.disconnect()


async def stored(http: aiohttp.ClientSession, url: str, conversation_id: str) -> tuple[Any, ...]:
    """What a refused event must not change: the user's conversations, the
    messages of one conversation, the org's lead version."""
    found = []
    for path in (
        "/api/conversations?limit=200",
        f"/api/conversations/{conversation_id}/messages?limit=200",
        "/api/leads?limit=1",
    ):
        async with http.get(url + path, headers=bearer(TOKEN)) as response:
            assert response.status == 200, await response.text()
            found.append(await response.json())
    conversations, messages, leads = found
    return (
        [c["id"] for c in conversations["conversations"]],
        [(m["id"], m["text"]) for m in messages["messages"]],
        leads["version"],
    )


async def call(sio: socketio.AsyncClient, event: str, payload: Any) -> Any:
    return await sio.call(event, payload, timeout=10)


def assert_well_formed(event: str, ack: Any) -> None:
    assert isinstance(ack, dict), ack
    if ack.get("ok") is True:
        for name, kind in SUCCESS_FIELDS[event].items():
            assert isinstance(ack.get(name), kind), (name, ack)
        return
    assert ack.get("ok") is False, ack
    error = ack.get("error")
    assert isinstance(error, dict) and isinstance(error.get("message"), str), ack
    assert error.get("code") in KNOWN_CODES, ack


@pytest.mark.parametrize("event", list(EVENTS))
@FUZZ
@given(data=st.data())
async def test_any_payload_gets_a_clear_ack_and_the_connection_keeps_working(
    events_target, client, http, event, data
):
    # One real conversation, so that payloads naming it reach past "not found".
    first = await call(client, "chat:send", {"text": "hello", "clientMessageId": "fuzz-first"})
    assert first["ok"], first
    await call(client, "chat:stop", {"conversationId": first["conversationId"]})
    real_ids = {"conversationId": first["conversationId"], "messageId": first["messageId"]}
    payload = data.draw(EVENTS[event])
    if isinstance(payload, dict):
        for name, real in real_ids.items():
            if name in payload and data.draw(st.booleans()):
                payload[name] = real
    before = await stored(http, events_target.url, first["conversationId"])

    ack = await call(client, event, payload)

    assert_well_formed(event, ack)
    if ack["ok"] is False:
        after = await stored(http, events_target.url, first["conversationId"])
        assert after == before, (payload, ack)
    elif event == "chat:send":
        stopped = await call(client, "chat:stop", {"conversationId": ack["conversationId"]})
        assert stopped["ok"], stopped
    follow_up = await call(client, "leads:unsubscribe", {})
    assert follow_up == {"ok": True}, (payload, follow_up)
    assert client.connected


@pytest.mark.parametrize(
    ("event", "payload"),
    [
        ("leads:subscribe", {"since": float("nan")}),
        ("leads:subscribe", {"since": float("inf")}),
        ("chat:send", {"text": "a\udfff"}),
    ],
)
async def test_a_packet_the_server_cannot_decode_gets_an_error_ack(client, event, payload):
    # Python's json writes NaN, Infinity and lone surrogates as `\udfff`; orjson refuses them.
    ack = await client.call(event, payload, timeout=3)
    assert ack["ok"] is False and ack["error"]["code"] == "invalid_payload", ack
    assert await call(client, "leads:unsubscribe", {}) == {"ok": True}
