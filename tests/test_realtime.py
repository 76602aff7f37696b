"""Socket.IO events: the live feed and resync, chat validation, idempotency,
stop, resume, and limits that close one bad connection and nothing else."""

from __future__ import annotations

import asyncio

import pytest
import socketio
from support import bearer, settings_with

from leadstream.agent.providers.local_directory import LocalDirectoryProvider
from leadstream.server.appkeys import STORE
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
    sio = socketio.AsyncClient(reconnection=False)
    errors: list = []
    sio.on("connect_error", lambda data: errors.append(data))
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio.connect(
            str(server.make_url("/")),
            auth={"token": token("acme", "alice")},
            transports=["websocket"],
        )
    assert errors and errors[0]["data"]["code"] == "too_many_connections"
    assert (await connect(server, token("acme", "bob"))).sio.connected  # other users are fine
    await second.sio.disconnect()
    await asyncio.sleep(0.2)
    assert (await connect(server, token("acme", "alice"))).sio.connected  # a slot is free again
