"""Socket.IO events: the live feed and resync, chat validation, idempotency,
stop, resume, and limits that close one bad connection and nothing else."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace

import aiohttp
import pytest
import socketio
from support import EngineSocket, bearer, refused, settings_with

from leadstream.agent.providers.local_directory import LocalDirectoryProvider
from leadstream.realtime.acks import EventGate
from leadstream.realtime.limits import ConnectionLimits
from leadstream.server.http.appkeys import STORE
from leadstream.server.ratelimit import Limit
from leadstream.store.records import LeadInput


def lead(i: int) -> LeadInput:
    return LeadInput(source="test", person_id=f"p{i}", name=f"Person {i}", company="Acme")


async def test_subscribe_since_replays_exactly_the_missed_changes(server, connect, token):
    store = server.app[STORE]
    await store.upsert_leads("acme", [lead(i) for i in range(5)])  # versions 1-5
    watcher = await connect(server, token("acme", "bob"))
    ack = await watcher.call("leads:subscribe", {"since": 3})
    assert ack["ok"] and not ack["reset"] and ack["version"] == 5
    assert [c["version"] for c in ack["changes"]] == [4, 5]
    assert {c["op"] for c in ack["changes"]} == {"insert"} and ack["changes"][0]["lead"]["name"]

    await watcher.call("leads:unsubscribe", {})
    await store.upsert_leads("acme", [lead(i) for i in range(5, 8)])  # 6-8, unseen
    await asyncio.sleep(0.2)
    assert watcher.log.of("leads:changes") == []
    ack = await watcher.call("leads:subscribe", {"since": 5})
    assert [c["version"] for c in ack["changes"]] == [6, 7, 8]

    existing = await store.get_lead("acme", ack["changes"][0]["id"])
    await store.update_lead("acme", existing.id, {"title": "CTO"})
    await store.delete_lead("acme", existing.id)
    changes = []
    async with asyncio.timeout(10):
        while len(changes) < 2:
            await watcher.log.wait_for("leads:changes")
            changes = [c for e in watcher.log.of("leads:changes") for c in e["changes"]]
            await asyncio.sleep(0.01)
    assert [(c["version"], c["op"]) for c in changes] == [(9, "update"), (10, "delete")]
    assert changes[0]["lead"]["title"] == "CTO" and "lead" not in changes[1]


async def test_subscribe_resets_when_the_log_no_longer_reaches_back(server, connect, token):
    store = server.app[STORE]
    await store.upsert_leads("acme", [lead(i) for i in range(3)])
    await store.prune_changes(now=10**10)  # everything is past retention
    watcher = await connect(server, token())
    stale = await watcher.call("leads:subscribe", {"since": 1})
    assert stale["reset"] is True and stale["changes"] == [] and stale["version"] == 3
    current = await watcher.call("leads:subscribe", {"since": 3})
    assert current["reset"] is False and current["changes"] == []
    future = await watcher.call("leads:subscribe", {"since": 99})
    assert future["reset"] is True
    bad = await watcher.call("leads:subscribe", {"since": "yesterday"})
    assert bad["ok"] is False and bad["error"]["code"] == "invalid_payload"


async def test_rest_write_reaches_subscribers_of_that_org_only(server, connect, token, http):
    mine = await connect(server, token("acme", "bob"))
    theirs = await connect(server, token("globex", "eve"))
    for client in (mine, theirs):
        await client.call("leads:subscribe", {})
    response = await http.post(
        server.make_url("/api/leads"),
        json={"name": "Live Lead"},
        headers=bearer(token("acme", "alice")),
    )
    assert response.status == 201
    event = await mine.log.wait_for("leads:changes")
    assert event["version"] == 1 and event["changes"][0]["lead"]["name"] == "Live Lead"
    await asyncio.sleep(0.2)
    assert theirs.log.events == []


async def test_chat_send_validation(server, connect, token, settings):
    client = await connect(server, token())
    cases = [
        ({"text": "   "}, "text_empty"),
        ({"text": "x" * (settings.max_text + 1)}, "text_too_long"),
        ({"text": 42}, "invalid_payload"),
        ({}, "invalid_payload"),
        ({"text": "hi", "conversationId": "cv_nope"}, "not_found"),
    ]
    for payload, code in cases:
        ack = await client.call("chat:send", payload)
        assert ack["ok"] is False and ack["error"]["code"] == code, (payload, ack)
    ack = await client.sio.call("chat:send", "just a string", timeout=10)
    assert ack["error"]["code"] == "invalid_payload"
    done = await client.chat("hello")  # the connection is still fine
    assert done["stopped"] is False


async def test_conversations_belong_to_their_user(server, connect, token, http):
    alice = await connect(server, token("acme", "alice"))
    alice_tab2 = await connect(server, token("acme", "alice"))
    bob = await connect(server, token("acme", "bob"))
    done = await alice.chat("find 5 CTOs")
    conversation_id = done["ack"]["conversationId"]
    await alice_tab2.log.wait_for("chat:done")  # every tab of the owner gets the reply
    assert alice_tab2.log.of("leads:batch")
    assert bob.log.events == []  # nobody else does
    for event, payload in [
        ("chat:send", {"text": "save them", "conversationId": conversation_id}),
        ("chat:stop", {"conversationId": conversation_id}),
        (
            "chat:resume",
            {"conversationId": conversation_id, "messageId": done["messageId"], "offset": 0},
        ),
    ]:
        ack = await bob.call(event, payload)
        assert ack["ok"] is False and ack["error"]["code"] == "not_found"
    bob_view = await http.get(
        server.make_url(f"/api/conversations/{conversation_id}/messages"),
        headers=bearer(token("acme", "bob")),
    )
    assert bob_view.status == 404
    own = await http.get(
        server.make_url(f"/api/conversations/{conversation_id}/messages"),
        headers=bearer(token("acme", "alice")),
    )
    messages = (await own.json())["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["toolCalls"][0]["name"] == "search_leads"
    listed = await (
        await http.get(server.make_url("/api/conversations"), headers=bearer(token()))
    ).json()
    assert [c["id"] for c in listed["conversations"]] == [conversation_id]


async def test_chat_send_is_idempotent_on_client_message_id(server, connect, token):
    client = await connect(server, token())
    first = await client.call("chat:send", {"text": "find 5 CTOs", "clientMessageId": "m-1"})
    second = await client.call("chat:send", {"text": "find 5 CTOs", "clientMessageId": "m-1"})
    assert first == second
    await client.log.wait_for("chat:done")
    third = await client.call("chat:send", {"text": "find 5 CTOs", "clientMessageId": "m-1"})
    assert third == first
    await asyncio.sleep(0.2)
    assert len(client.log.of("chat:done")) == 1
    assert len({b["searchId"] for b in client.log.of("leads:batch")}) == 1


class SlowDirectory(LocalDirectoryProvider):
    """The real directory, with a pause between pages, to stop a search midway."""

    def search(self, query, *, limit):
        pages = super().search(query, limit=limit)

        async def slow():
            async for page in pages:
                yield page
                await asyncio.sleep(0.3)

        return slow()


async def test_stop_mid_search_then_keep_chatting(settings, start_server, connect, token, http):
    slow_server = await start_server(
        settings, provider=lambda store: SlowDirectory(store, chunk_size=5)
    )
    client = await connect(slow_server, token())
    ack = await client.call("chat:send", {"text": "find 100 CTOs"})
    await client.log.wait_for("leads:batch")
    busy = await client.call(
        "chat:send", {"text": "find 5 CFOs", "conversationId": ack["conversationId"]}
    )
    assert busy["ok"] is False and busy["error"]["code"] == "conversation_busy"
    stopped = await client.call("chat:stop", {"conversationId": ack["conversationId"]})
    assert stopped == {"ok": True, "stopped": True}
    done = await client.log.wait_for("chat:done")
    assert done["stopped"] is True
    assert len([row for b in client.log.of("leads:batch") for row in b["leads"]]) < 100
    again = await client.call("chat:stop", {"conversationId": ack["conversationId"]})
    assert again == {"ok": True, "stopped": False}
    messages = await (
        await http.get(
            slow_server.make_url(f"/api/conversations/{ack['conversationId']}/messages"),
            headers=bearer(token()),
        )
    ).json()
    assert messages["messages"][1]["status"] == "stopped"
    follow_up = await client.chat("hello", ack["conversationId"])
    assert follow_up["stopped"] is False


async def test_resume_returns_text_from_offset(server, connect, token):
    client = await connect(server, token())
    done = await client.chat("hello")
    text = "".join(d["text"] for d in client.log.of("chat:delta"))
    deltas = client.log.of("chat:delta")
    assert [d["offset"] for d in deltas] == [
        sum(len(x["text"]) for x in deltas[:i]) for i in range(len(deltas))
    ]
    ack = await client.call(
        "chat:resume",
        {"conversationId": done["conversationId"], "messageId": done["messageId"], "offset": 10},
    )
    assert ack == {"ok": True, "text": text[10:], "done": True}


async def test_oversize_packet_closes_only_that_connection(settings, start_server, connect, token):
    server = await start_server(settings_with(settings, max_packet=64 * 1024))
    bystander = await connect(server, token("acme", "bob"))
    offender = await connect(server, token("acme", "alice"))
    disconnected = asyncio.Event()
    offender.sio.on("disconnect", lambda *args: disconnected.set())
    await offender.sio.emit("chat:send", {"text": "x" * 200_000})
    async with asyncio.timeout(10):
        await disconnected.wait()
    assert bystander.sio.connected
    done = await bystander.chat("find 3 CTOs")
    assert done["stopped"] is False


async def test_unknown_events_and_garbage_do_not_hurt(server, connect, token):
    client = await connect(server, token())
    await client.sio.emit("no:such:event", {"x": 1})
    ack = await client.call("leads:subscribe", ["not", "an", "object"])
    assert ack["ok"] is False
    assert (await client.chat("hello"))["stopped"] is False
    assert isinstance(client.sio, socketio.AsyncClient) and client.sio.connected


async def test_event_floods_get_rate_limited_acks_and_hurt_nobody(
    settings, start_server, connect, token
):
    server = await start_server(settings_with(settings, events_per_s=5, events_burst=10))
    flooder = await connect(server, token("acme", "alice"))
    bystander = await connect(server, token("acme", "bob"))
    acks = await asyncio.gather(*(flooder.call("leads:subscribe", {}) for _ in range(30)))
    limited = [ack for ack in acks if not ack["ok"]]
    assert limited and all(ack["error"]["code"] == "rate_limited" for ack in limited)
    assert sum(1 for ack in acks if ack["ok"]) <= 11
    assert flooder.sio.connected
    assert (await bystander.call("leads:subscribe", {}))["ok"]
    await asyncio.sleep(0.5)  # the bucket refills
    assert (await flooder.call("leads:subscribe", {}))["ok"]


async def test_too_many_connections_per_user_are_refused(settings, start_server, connect, token):
    server = await start_server(settings_with(settings, connections_per_user=2))
    await connect(server, token("acme", "alice"))
    second = await connect(server, token("acme", "alice"))
    error = await refused(str(server.make_url("/")), {"token": token("acme", "alice")})
    assert error["data"]["code"] == "too_many_connections"
    assert (await connect(server, token("acme", "bob"))).sio.connected  # other users are fine
    await second.sio.disconnect()
    await asyncio.sleep(0.2)
    assert (await connect(server, token("acme", "alice"))).sio.connected  # a slot is free again


async def test_binary_packets_close_that_connection_only(server, connect, token, http):
    bystander = await connect(server, token("globex", "eve"))
    raw = await EngineSocket.open(http, str(server.make_url("/")))
    assert (await raw.connect(token("acme", "alice"))).startswith("40{")
    sent = await raw.send_binary_attack(frames=50)
    async with asyncio.timeout(10):
        await raw.wait_closed()
    assert sent < 50, "the server kept the connection open through 50 MB of attachments"
    assert (await bystander.call("leads:subscribe", {}))["ok"]
    plain = await EngineSocket.open(http, str(server.make_url("/")))
    assert (await plain.connect(token("acme", "alice"))).startswith("40{")
    await plain.ws.send_bytes(b"not a packet")  # a bare binary frame is refused the same way
    async with asyncio.timeout(10):
        await plain.wait_closed()


async def test_refused_connect_closes_the_transport(server, token, http):
    raw = await EngineSocket.open(http, str(server.make_url("/")))
    refusal = await raw.connect("not-a-token")
    assert refusal.startswith("44") and json.loads(refusal[2:])["data"]["code"] == "unauthorized"
    # Retrying on the same transport is not possible: the server closes it (after 0.5 s).
    await raw.ws.send_str("40" + json.dumps({"token": token()}))
    async with asyncio.timeout(10):
        await raw.wait_closed()


async def test_transport_that_never_connects_is_closed(settings, start_server, token, http):
    server = await start_server(settings_with(settings, connect_timeout_s=1))
    idle = await EngineSocket.open(http, str(server.make_url("/")))
    prompt = await EngineSocket.open(http, str(server.make_url("/")))
    assert (await prompt.connect(token())).startswith("40{")
    async with asyncio.timeout(10):
        await idle.wait_closed()
    await asyncio.sleep(1.5)  # past the connect timeout: a connected socket stays
    await prompt.ws.send_str('420["leads:subscribe",{}]')
    assert json.loads((await prompt.next_text())[3:])[0]["ok"] is True


async def test_events_after_token_expiry_ack_unauthorized_and_disconnect(server, connect, token):
    client = await connect(server, token(ttl=2))
    expires = time.time() + 2
    assert (await client.call("leads:subscribe", {}))["ok"]
    gone = asyncio.Event()
    client.sio.on("disconnect", lambda *reason: gone.set())
    await asyncio.sleep(expires - time.time() + 0.2)
    ack = await client.call("leads:subscribe", {})
    assert ack == {
        "ok": False,
        "error": {"code": "unauthorized", "message": ack["error"]["message"]},
    }
    async with asyncio.timeout(10):
        await gone.wait()
    fresh = await connect(server, token())  # a new token connects again
    assert (await fresh.call("leads:subscribe", {}))["ok"]


async def test_idle_subscribed_socket_is_disconnected_when_its_token_expires(
    server, connect, token, http
):
    watcher = await connect(server, token("acme", "bob", ttl=2))
    assert (await watcher.call("leads:subscribe", {}))["ok"]
    reasons: list = []
    gone = asyncio.Event()

    def disconnected(*reason) -> None:
        reasons.extend(reason)
        gone.set()

    watcher.sio.on("disconnect", disconnected)
    async with asyncio.timeout(10):
        await gone.wait()
    assert reasons == ["server disconnect"]
    created = await http.post(
        server.make_url("/api/leads"), json={"name": "After Expiry"}, headers=bearer(token())
    )
    assert created.status == 201
    await asyncio.sleep(0.3)
    assert watcher.log.of("leads:changes") == []  # the org's changes no longer reach it


async def test_gate_refuses_an_event_past_the_token_expiry():
    limits = ConnectionLimits(events_per_s=10, burst=10, connections_per_user=5)
    sessions = {
        "live": {"org": "acme", "user": "alice", "expires_at": time.time() + 60},
        "stale": {"org": "acme", "user": "bob", "expires_at": time.time() - 1},
    }
    expired: list[str] = []

    async def session_of(sid: str) -> dict:
        return sessions[sid]

    gate = EventGate(limits, session_of, on_expired=expired.append)
    assert await gate.refusal("live", "leads:subscribe") is None
    refusal = await gate.refusal("stale", "leads:subscribe")
    assert refusal is not None and refusal["error"]["code"] == "unauthorized"
    assert expired == ["stale"]
    gone = await gate.refusal("missing", "leads:subscribe")
    assert gone is not None and gone["error"]["code"] == "unauthorized"


def test_connection_limits_count_per_address():
    limits = ConnectionLimits(
        events_per_s=10, burst=10, connections_per_user=10, connections_per_ip=2
    )
    assert limits.admit("a", "acme", "alice", "10.0.0.1") is None
    assert limits.admit("b", "globex", "eve", "10.0.0.1") is None
    refusal = limits.admit("c", "initech", "bob", "10.0.0.1")
    assert refusal is not None and "address" in refusal
    assert limits.admit("d", "initech", "bob", "10.0.0.2") is None
    limits.release("a")
    assert limits.connections_from("10.0.0.1") == 1
    assert limits.admit("c", "initech", "bob", "10.0.0.1") is None


async def test_too_many_connections_per_address_are_refused(settings, start_server, connect, token):
    server = await start_server(settings_with(settings, connections_per_ip=2))
    first = await connect(server, token("acme", "alice"))
    await connect(server, token("globex", "eve"))
    error = await refused(str(server.make_url("/")), {"token": token("initech", "bob")})
    assert error["data"]["code"] == "too_many_connections"
    await first.sio.disconnect()
    await asyncio.sleep(0.2)
    assert (await connect(server, token("initech", "bob"))).sio.connected


async def test_handshakes_per_address_are_rate_limited(settings, start_server, token, http):
    limits = replace(settings.rate_limits, handshake_ip=(Limit(3, 60),))
    server = await start_server(settings_with(settings, rate_limits=limits))
    url = server.make_url("/socket.io/").with_query(EIO="4", transport="polling")
    statuses = []
    for _ in range(5):
        async with http.get(url) as response:
            statuses.append(response.status)
            if response.status == 429:
                body = await response.json()
                assert body["error"]["code"] == "rate_limited"
                assert int(response.headers["Retry-After"]) >= 1
    assert statuses == [200, 200, 200, 429, 429]
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await EngineSocket.open(http, str(server.make_url("/")))
    assert caught.value.status == 429
    # The rest of the server, and requests of open transports, are not limited by it.
    assert (await http.get(server.make_url("/api/leads"), headers=bearer(token()))).status == 200
