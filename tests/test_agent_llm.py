"""The agent with an OpenAI-compatible model: the real SDK streams from a fake
server over real HTTP, the app runs on a real port, and a real Socket.IO
client watches. What the model sees of a search is checked too: a summary and
a searchId, never the rows."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from fakes.openai_server import DyingReply, ErrorReply, FakeToolCall, TextReply, ToolCallReply
from support import settings_with
from test_realtime import SlowDirectory

from leadstream.server.http.appkeys import STORE


@pytest.fixture
def llm_settings(settings, fake_openai):
    return settings_with(
        settings,
        openai_api_key="sk-test",
        openai_base_url=fake_openai.base_url,
        model="gpt-4o-mini",
    )


def search(**args) -> FakeToolCall:
    return FakeToolCall("search_leads", args)


def tool_results(request: dict) -> list[dict]:
    return [orjson.loads(m["content"]) for m in request["messages"] if m["role"] == "tool"]


async def test_text_only_answer_streams_with_usage_and_cost(
    llm_settings, fake_openai, start_server, connect, token
):
    server = await start_server(llm_settings)
    fake_openai.script(TextReply("Hello! I find B2B leads for you.", pieces=6))
    client = await connect(server, token())
    done = await client.chat("hi")
    text = "".join(d["text"] for d in client.log.of("chat:delta"))
    assert text == "Hello! I find B2B leads for you."
    assert done["usage"]["promptTokens"] > 0 and done["usage"]["completionTokens"] > 0
    assert done["usage"]["costUsd"] > 0  # gpt-4o-mini is in the price table
    request = fake_openai.requests[0]
    assert request["stream"] is True and request["stream_options"] == {"include_usage": True}
    assert {t["function"]["name"] for t in request["tools"]} == {
        "search_leads",
        "save_leads",
        "export_leads",
        "lookup_profile",
    }


async def test_fragmented_tool_call_rows_to_client_summary_to_model(
    llm_settings, fake_openai, start_server, connect, token
):
    server = await start_server(llm_settings)
    fake_openai.script(
        ToolCallReply(
            [search(title="CTO", industry="fintech", hasPhone=True, limit=100)], fragments=25
        ),
        TextReply("Found them."),
    )
    client = await connect(server, token())
    await client.chat("Find 100 CTOs in fintech with phone numbers")
    rows = [row for b in client.log.of("leads:batch") for row in b["leads"]]
    assert len(rows) == 100 and all(row["phones"] for row in rows)
    summary = tool_results(fake_openai.requests[1])[0]
    assert summary["found"] == 100 and summary["searchId"].startswith("sr_")
    assert len(summary["sample"]) == 5
    assert len(fake_openai.requests[1]["messages"][-1]["content"]) < 2000, (
        "rows never reach the model"
    )


async def test_two_parallel_tool_calls(llm_settings, fake_openai, start_server, connect, token):
    server = await start_server(llm_settings)
    fake_openai.script(
        ToolCallReply(
            [search(title="CTO", limit=10), search(title="CFO", limit=10)], interleave=True
        ),
        TextReply("Two searches done."),
    )
    client = await connect(server, token())
    await client.chat("CTOs and CFOs please")
    done_tools = [t for t in client.log.of("chat:tool") if t["status"] == "done"]
    assert len(done_tools) == 2
    assert len({b["searchId"] for b in client.log.of("leads:batch")}) == 2
    results = tool_results(fake_openai.requests[1])
    assert [r["found"] for r in results] == [10, 10]


async def test_invalid_argument_goes_back_to_the_model_which_corrects_it(
    llm_settings, fake_openai, start_server, connect, token
):
    server = await start_server(llm_settings)
    fake_openai.script(
        ToolCallReply([search(title="CTO", limit=5000)]),
        ToolCallReply([search(title="CTO", limit=200)]),
        TextReply("Here are 200."),
    )
    client = await connect(server, token())
    done = await client.chat("all the CTOs")
    assert done["stopped"] is False and client.log.of("chat:error") == []
    error = tool_results(fake_openai.requests[1])[0]["error"]
    assert error["code"] == "limit_too_high" and "200" in error["message"]
    statuses = [(t["status"], t.get("error", {}).get("code")) for t in client.log.of("chat:tool")]
    assert ("error", "limit_too_high") in statuses
    assert tool_results(fake_openai.requests[2])[-1]["found"] == 200
    bad_json = ToolCallReply([FakeToolCall("search_leads", '{"title": "CTO", ')])
    fake_openai.script(bad_json, TextReply("Sorry."))
    await client.chat("again", done["ack"]["conversationId"])
    assert "not valid JSON" in tool_results(fake_openai.requests[-1])[-1]["error"]["message"]


async def test_429_then_success(llm_settings, fake_openai, start_server, connect, token):
    server = await start_server(llm_settings)
    fake_openai.script(ErrorReply(429, retry_after=0.2), TextReply("After a pause."))
    client = await connect(server, token())
    await client.chat("hello")
    assert "".join(d["text"] for d in client.log.of("chat:delta")) == "After a pause."
    assert len(fake_openai.requests) == 2


async def test_stream_dying_midway_is_model_unavailable_and_the_conversation_goes_on(
    llm_settings, fake_openai, start_server, connect, token, http
):
    server = await start_server(llm_settings)
    fake_openai.script(
        DyingReply(TextReply("This answer will be cut off somewhere.", pieces=8), after_chunks=3)
    )
    client = await connect(server, token())
    ack = await client.call("chat:send", {"text": "hello"})
    error = await client.log.wait_for("chat:error")
    assert error["error"]["code"] == "model_unavailable"
    message = await server.app[STORE].get_message("acme", ack["messageId"])
    assert message.status == "failed" and message.text, "the partial reply is kept"
    fake_openai.script(TextReply("Back again."))
    done = await client.chat("still there?", ack["conversationId"])
    assert done["stopped"] is False


async def test_retries_exhausted_is_model_unavailable(
    llm_settings, fake_openai, start_server, connect, token
):
    server = await start_server(settings_with(llm_settings, model_max_retries=1))
    fake_openai.script(ErrorReply(500), ErrorReply(500))
    client = await connect(server, token())
    await client.call("chat:send", {"text": "hello"})
    error = await client.log.wait_for("chat:error")
    assert error["error"]["code"] == "model_unavailable"


async def test_stop_in_the_middle_of_a_tool(
    llm_settings, fake_openai, start_server, connect, token
):
    server = await start_server(
        llm_settings, provider=lambda store: SlowDirectory(store, chunk_size=5)
    )
    fake_openai.script(ToolCallReply([search(title="CTO", limit=200)]))
    client = await connect(server, token())
    ack = await client.call("chat:send", {"text": "find CTOs"})
    await client.log.wait_for("leads:batch")
    assert (await client.call("chat:stop", {"conversationId": ack["conversationId"]}))["stopped"]
    done = await client.log.wait_for("chat:done")
    assert done["stopped"] is True
    await asyncio.sleep(0.3)
    assert len(fake_openai.requests) == 1, "the model is not asked again after a stop"


async def test_daily_budget_stops_new_turns(
    llm_settings, fake_openai, start_server, connect, token
):
    server = await start_server(settings_with(llm_settings, daily_budget_tokens=50))
    fake_openai.script(TextReply("A first answer that uses the whole budget."))
    client = await connect(server, token())
    first = await client.chat("hello")
    assert first["usage"]["promptTokens"] + first["usage"]["completionTokens"] > 50
    ack = await client.call(
        "chat:send", {"text": "more", "conversationId": first["ack"]["conversationId"]}
    )
    assert ack["ok"]
    error = await client.log.wait_for("chat:error")
    assert error["error"]["code"] == "budget_exceeded" and error["messageId"] == ack["messageId"]
    assert len(fake_openai.requests) == 1
    other_org = await connect(server, token("globex", "gina"))
    fake_openai.script(TextReply("Other orgs have their own budget."))
    assert (await other_org.chat("hello"))["stopped"] is False
