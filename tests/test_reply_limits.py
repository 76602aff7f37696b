"""What one user or org can spend: replies running at once, the daily model
budget (reserved before a reply, charged however it ends) and the daily
RocketReach lookup credits. The app runs on a real port with the real SDK
against the fake OpenAI server, real Socket.IO clients, a real SQLite file."""

from __future__ import annotations

import asyncio
import socket

import pytest
from fakes.openai_server import FakeOpenAI, FakeToolCall, StallingReply, TextReply, ToolCallReply
from fakes.rocketreach_server import API_KEY
from support import settings_with

from leadstream.agent.budget import utc_day
from leadstream.agent.providers.rocketreach import Backoff, RocketReachProvider
from leadstream.agent.tokens import TokenCounter
from leadstream.server.http.appkeys import STORE

MODEL = "gpt-4o-mini"
FAST_RETRY = Backoff(attempts=3, base_delay_s=0.01, max_delay_s=0.05)
# A reply that shows some text and then hangs until it is stopped: the
# model's usage chunk never comes.
HANGING = StallingReply(
    TextReply("Looking for fintech CTOs with direct phone numbers now.", pieces=6),
    after_chunks=3,
    stall_s=60,
)


@pytest.fixture
def llm_settings(settings, fake_openai):
    return settings_with(
        settings, openai_api_key="sk-test", openai_base_url=fake_openai.base_url, model=MODEL
    )


def hang_always(fake: FakeOpenAI) -> None:
    fake.responder = lambda body: HANGING


async def test_concurrent_sends_cannot_overrun_the_budget(
    llm_settings, fake_openai, start_server, connect, token
):
    server = await start_server(settings_with(llm_settings, daily_budget_tokens=1000))
    hang_always(fake_openai)
    clients = [await connect(server, token("acme", f"user{i}")) for i in range(20)]
    acks = await asyncio.gather(
        *(c.call("chat:send", {"text": "Find 200 CTOs in fintech"}) for c in clients)
    )
    started = [(c, a) for c, a in zip(clients, acks, strict=True) if a["ok"]]
    refused = [a["error"]["code"] for a in acks if not a["ok"]]
    assert set(refused) <= {"too_many_replies"}
    assert len(started) + len(refused) == 20
    assert len(started) <= llm_settings.replies_per_org
    outcomes = await asyncio.gather(*(_first_outcome(c, a["messageId"]) for c, a in started))
    running = [o for o in outcomes if o[0] == "chat:delta"]
    over = [o for o in outcomes if o[0] == "chat:error"]
    assert len(running) == 1, "only the reply holding the budget runs"
    assert {o[1]["error"]["code"] for o in over} == {"budget_exceeded"}
    assert len(over) == len(started) - 1
    assert len(fake_openai.requests) == 1, "refused replies never reach the model"
    runner, ack = next((c, a) for (c, a), o in zip(started, outcomes, strict=True) if o in running)
    await runner.call("chat:stop", {"conversationId": ack["conversationId"]})
    done = await runner.log.wait_for("chat:done")
    charged = done["usage"]["promptTokens"] + done["usage"]["completionTokens"]
    tokens, _ = await server.app[STORE].usage_on("acme", utc_day())
    assert 0 < tokens == charged
    assert tokens <= 1000 + charged, "at most the budget plus one reply's worth"


async def _first_outcome(client, message_id: str) -> tuple[str, dict]:
    """The first chat:delta or chat:error of a reply: it ran, or it was refused."""
    waits = {
        asyncio.create_task(client.log.wait_for(name, lambda d: d["messageId"] == message_id)): name
        for name in ("chat:delta", "chat:error")
    }
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    first = done.pop()
    return waits[first], first.result()


async def test_stop_before_the_usage_chunk_is_charged_for_what_was_streamed(
    llm_settings, fake_openai, start_server, connect, token
):
    server = await start_server(llm_settings)
    fake_openai.script(HANGING)
    client = await connect(server, token())
    ack = await client.call("chat:send", {"text": "Find CTOs in fintech"})
    await client.log.wait_for("chat:delta")
    assert (await client.call("chat:stop", {"conversationId": ack["conversationId"]}))["stopped"]
    done = await client.log.wait_for("chat:done")
    assert done["stopped"] is True
    assert fake_openai.usages == [], "the model never sent its usage figures"
    request = fake_openai.requests[0]
    counter = TokenCounter()
    prompt = counter.count_messages(request["messages"], MODEL, request["tools"])
    shown = "".join(d["text"] for d in client.log.of("chat:delta"))
    assert done["usage"]["promptTokens"] == prompt
    assert done["usage"]["completionTokens"] == counter.count_text(shown, MODEL) > 0
    assert done["usage"]["costUsd"] > 0
    tokens, cost = await server.app[STORE].usage_on("acme", utc_day())
    assert tokens == prompt + done["usage"]["completionTokens"] and cost > 0


async def test_replies_at_once_are_limited_per_user_and_per_org(
    llm_settings, fake_openai, start_server, connect, token
):
    server = await start_server(settings_with(llm_settings, replies_per_user=2, replies_per_org=3))
    hang_always(fake_openai)
    alice = await connect(server, token("acme", "alice"))
    first = [await alice.call("chat:send", {"text": f"search {i}"}) for i in range(2)]
    assert all(a["ok"] for a in first)
    third = await alice.call("chat:send", {"text": "one more"})
    assert third["ok"] is False and third["error"]["code"] == "too_many_replies"
    assert "2 replies running" in third["error"]["message"]
    bob = await connect(server, token("acme", "bob"))
    assert (await bob.call("chat:send", {"text": "bob's search"}))["ok"]
    carol = await connect(server, token("acme", "carol"))
    refused = await carol.call("chat:send", {"text": "carol's search"})
    assert refused["ok"] is False and refused["error"]["code"] == "too_many_replies"
    assert "organisation" in refused["error"]["message"]
    conversations, _ = await server.app[STORE].list_conversations("acme", "carol")
    assert conversations == [], "a refused send stores nothing"
    other = await connect(server, token("globex", "dan"))
    assert (await other.call("chat:send", {"text": "another org"}))["ok"]
    # A stopped reply frees its slot.
    await alice.call("chat:stop", {"conversationId": first[0]["conversationId"]})
    await alice.log.wait_for("chat:done")
    assert (await alice.call("chat:send", {"text": "now it fits"}))["ok"]


def search(**args) -> FakeToolCall:
    return FakeToolCall("search_leads", args)


def rocketreach(base_url: str):
    return lambda store: RocketReachProvider(
        API_KEY, base_url=base_url, requests_per_s=1000, retry=FAST_RETRY
    )


async def test_lookup_credits_are_capped_per_org_per_day(
    llm_settings, fake_openai, fake_rocketreach, start_server, connect, token
):
    server = await start_server(
        settings_with(llm_settings, daily_credits=12),
        provider=rocketreach(fake_rocketreach.base_url),
    )
    fake_openai.script(
        ToolCallReply([search(title="CTO", hasPhone=True, limit=50)]), TextReply("Some found.")
    )
    client = await connect(server, token())
    first = await client.chat("50 CTOs with phone numbers")
    tool = next(t for t in client.log.of("chat:tool") if t["status"] == "done")
    assert "lookup credits are used up" in tool["summary"]
    assert fake_rocketreach.lookups_answered == 12, "no lookup past the daily credits"
    fake_openai.script(
        ToolCallReply([search(title="CTO", hasEmail=True, limit=5)]), TextReply("None left.")
    )
    await client.chat("5 more with emails", first["ack"]["conversationId"])
    error = next(t for t in client.log.of("chat:tool") if t["status"] == "error")
    assert error["error"]["code"] == "credits_exhausted"
    assert "12 lookup credits are used up" in error["error"]["message"]
    assert fake_rocketreach.lookups_answered == 12
    model_saw = fake_openai.requests[-1]["messages"][-1]["content"]
    assert "credits_exhausted" in model_saw, "the model can tell the user"


async def test_rocketreach_unreachable_is_a_plain_tool_error(
    llm_settings, fake_openai, start_server, connect, token
):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = await start_server(
        llm_settings, provider=rocketreach(f"http://127.0.0.1:{port}/api/v2")
    )
    fake_openai.script(ToolCallReply([search(title="CTO", limit=5)]), TextReply("Sorry."))
    client = await connect(server, token())
    await client.chat("5 CTOs")
    error = next(t for t in client.log.of("chat:tool") if t["status"] == "error")["error"]
    assert error == {
        "code": "provider_unavailable",
        "message": "cannot reach RocketReach (gave up after 3 tries)",
    }
