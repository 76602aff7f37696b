"""One user floods `chat:send` from several sockets: at most
`replies_per_user` replies run (the model is a fake OpenAI server whose
answers hang until stopped), the rest are refused with `too_many_replies`
before anything is stored, and the server and other orgs carry on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import socketio
from fakes.openai_server import FakeOpenAI, StallingReply, TextReply
from hostile_support import Target
from support import EventLog, connect_client

FLOOD = "Find 200 CTOs in fintech"
SENDS = 50
SOCKETS = 5
REPLIES_PER_USER = 2  # the embedded default
# The flood may not grow the server by more than this.
RSS_BOUND = 40 * 1024 * 1024


def answer(body: dict[str, Any]) -> StallingReply | TextReply:
    """The flood's replies hang (so they stay running); anything else answers."""
    last = body["messages"][-1]
    if last["role"] == "user" and last["content"] == FLOOD:
        return StallingReply(TextReply("Searching fintech CTOs now."), after_chunks=2, stall_s=60)
    return TextReply("Hello from the other org.")


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    fake = FakeOpenAI(api_key="sk-test", responder=answer)
    await fake.start()
    assert fake._runner is not None
    fake._runner._shutdown_timeout = 0.5  # hanging handlers are not waited for
    yield fake
    await fake.stop()


async def open_socket(target: Target, org: str, user: str) -> tuple[socketio.AsyncClient, EventLog]:
    auth = {"token": target.token(org, user)}
    client = await connect_client(target.url, auth, ("chat:delta", "chat:done", "chat:error"))
    return client.sio, client.log


async def call_when_allowed(sio: socketio.AsyncClient, event: str, data: Any) -> Any:
    """Call `event`, waiting out the user's event rate limit (the flood spent it)."""
    for _ in range(50):
        ack = await sio.call(event, data, timeout=20)
        if ack["ok"] or ack["error"]["code"] != "rate_limited":
            return ack
        await asyncio.sleep(0.1)
    return ack


async def conversations(http: aiohttp.ClientSession, target: Target) -> list[dict[str, Any]]:
    """alice's stored conversations (waiting out a 429 the flood earned)."""
    for _ in range(50):
        async with http.get(
            target.url + "/api/conversations", headers=target.headers("victim", "alice")
        ) as response:
            if response.status != 429:
                assert response.status == 200
                return (await response.json())["conversations"]
        await asyncio.sleep(0.1)
    raise AssertionError("still rate limited after 5 s")


async def test_a_flood_of_chat_sends_runs_at_most_the_users_replies(
    start_target: Callable[..., Awaitable[Target]], fake_openai: FakeOpenAI
) -> None:
    target = await start_target(
        OPENAI_API_KEY="sk-test",
        OPENAI_BASE_URL=fake_openai.base_url,
        LEADSTREAM_MODEL="gpt-4o-mini",
    )
    sockets = [await open_socket(target, "victim", "alice") for _ in range(SOCKETS)]
    other, other_log = await open_socket(target, "bystander", "bob")
    try:
        async with aiohttp.ClientSession() as http:
            # Warm up: the first reply of a process loads the tokenizer (GIL-heavy).
            warm = await other.call("chat:send", {"text": "hello"}, timeout=20)
            await other_log.wait_for("chat:done", lambda d: d["messageId"] == warm["messageId"])
            rss_before = target.rss()
            async with target.probe() as probe:
                acks = await asyncio.gather(
                    *(
                        sockets[i % SOCKETS][0].call("chat:send", {"text": FLOOD}, timeout=20)
                        for i in range(SENDS)
                    )
                )
                ack = await other.call("chat:send", {"text": "hello"}, timeout=20)
                done = await other_log.wait_for(
                    "chat:done", lambda d: d["messageId"] == ack["messageId"]
                )
                await asyncio.sleep(0.3)  # keep probing while the flood's replies hang
            probe.assert_healthy()
            growth = target.rss() - rss_before
            started = [a for a in acks if a["ok"]]
            refused = [a["error"] for a in acks if not a["ok"]]
            assert len(started) == REPLIES_PER_USER
            # The per-user event rate limit may refuse some sends before the reply limit does.
            codes = [e["code"] for e in refused]
            assert (
                set(codes) <= {"too_many_replies", "rate_limited"} and "too_many_replies" in codes
            )
            assert len(refused) == SENDS - REPLIES_PER_USER
            assert done["stopped"] is False, "another org's chat completes"
            assert growth < RSS_BOUND, f"RSS grew {growth / 2**20:.1f} MB"
            # Only the running replies reached the model, and only they were stored.
            flood_requests = [
                r for r in fake_openai.requests if r["messages"][-1]["content"] == FLOOD
            ]
            assert len(flood_requests) == REPLIES_PER_USER
            for ack_ in started:
                stop = await call_when_allowed(
                    sockets[0][0], "chat:stop", {"conversationId": ack_["conversationId"]}
                )
                assert stop["ok"] and stop["stopped"], stop
            listed = await conversations(http, target)
            assert {c["id"] for c in listed} == {a["conversationId"] for a in started}
    finally:
        for sio, _ in [*sockets, (other, other_log)]:
            await sio.disconnect()
