"""Token economy of the agent (issue 4).

Runs "find 100 CTOs in fintech with phone numbers" / "save them" / "export to
csv" against the real app, with the real openai SDK talking to a fake
OpenAI-compatible server that answers instantly the way an LLM would (tool
call, then a short sentence). The fake counts every request's prompt and
completion tokens with tiktoken (o200k_base, as gpt-4o would). For comparison
it prints what the search turn would cost if the 100 rows went through the
model (the seed's approach): the same requests with the full rows as the
tool result. Also: time from chat:send to the first leads:batch.

Run: python bench/token_economy.py [--runs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import socketio
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fakes.openai_server import FakeOpenAI, FakeToolCall, Reply, TextReply, ToolCallReply

from leadstream.agent.tokens import TokenCounter
from leadstream.server.auth import TokenSigner
from leadstream.server.config import Settings
from leadstream.server.http.app import create_app
from leadstream.server.ratelimit import RateLimitSettings

MODEL = "gpt-4o"
TURNS = ("Find 100 CTOs in fintech with phone numbers", "save them", "export to csv")


def llm(body: dict[str, Any]) -> Reply:
    """What a good model does with our tools: one call per request, then a sentence."""
    messages = body["messages"]
    if messages[-1]["role"] == "tool":
        result = orjson.loads(messages[-1]["content"])
        return TextReply(f"Done: {orjson.dumps(result).decode()[:80]}")
    text = messages[-1]["content"].lower()
    search_id = next(
        (
            orjson.loads(m["content"]).get("searchId")
            for m in reversed(messages)
            if m["role"] == "tool" and "searchId" in orjson.loads(m["content"])
        ),
        None,
    )
    if text.startswith("find"):
        args = {"title": "CTO", "industry": "fintech", "hasPhone": True, "limit": 100}
        return ToolCallReply([FakeToolCall("search_leads", args)])
    if text.startswith("save"):
        return ToolCallReply([FakeToolCall("save_leads", {"searchId": search_id})])
    return ToolCallReply([FakeToolCall("export_leads", {"searchId": search_id})])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    fake = FakeOpenAI(api_key="sk-bench", responder=llm)
    base_url = await fake.start()
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder)
        settings = Settings(
            store_url=f"sqlite:///{data / 'leadstream.db'}",
            data_dir=data,
            secret="bench-secret-" + "b" * 32,
            # The bench sends faster than any user may.
            rate_limits=RateLimitSettings(enabled=False),
            openai_api_key="sk-bench",
            openai_base_url=base_url,
            model=MODEL,
        )
        runner = web.AppRunner(create_app(settings))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        token = TokenSigner(settings.secret, default_ttl_s=3600).issue("bench", "bench").token
        sio = socketio.AsyncClient(reconnection=False)
        events: dict[str, asyncio.Future[float]] = {}
        rows: list[dict[str, Any]] = []

        @sio.on("leads:batch")
        async def on_batch(data: dict[str, Any]) -> None:
            rows.extend(data["leads"])
            if "batch" in events and not events["batch"].done():
                events["batch"].set_result(time.perf_counter())

        @sio.on("chat:done")
        async def on_done(data: dict[str, Any]) -> None:
            events["done"].set_result(time.perf_counter())

        await sio.connect(url, auth={"token": token}, transports=["websocket"])
        loop = asyncio.get_running_loop()

        # One conversation of three turns, tokens counted per turn by the fake.
        conversation = None
        per_turn = []
        for text in TURNS:
            before = (fake.prompt_tokens, fake.completion_tokens)
            events["done"] = loop.create_future()
            payload = {"text": text} | ({"conversationId": conversation} if conversation else {})
            ack = await sio.call("chat:send", payload, timeout=30)
            conversation = ack["conversationId"]
            await events["done"]
            per_turn.append((fake.prompt_tokens - before[0], fake.completion_tokens - before[1]))
        search_rows = rows[:100]

        # First batch latency, fresh conversations, model answering instantly.
        to_first = []
        for _ in range(args.runs + 2):
            events["batch"], events["done"] = loop.create_future(), loop.create_future()
            started = time.perf_counter()
            ack = await sio.call("chat:send", {"text": TURNS[0]}, timeout=30)
            assert ack["ok"], ack
            to_first.append(await events["batch"] - started)
            await events["done"]
        await sio.disconnect()
        await runner.cleanup()
    await fake.stop()

    # The rows-through-the-model counterfactual: the search turn's second
    # request with all 100 rows (as the client got them) as the tool result.
    counter = TokenCounter()
    search_request = next(r for r in fake.requests if r["messages"][-1]["role"] == "tool")
    with_rows = [dict(m) for m in search_request["messages"]]
    with_rows[-1]["content"] = orjson.dumps(search_rows).decode()
    first = counter.count_messages(search_request["messages"][:-2], MODEL, search_request["tools"])
    second = counter.count_messages(with_rows, MODEL, search_request["tools"])
    print(f"model: {MODEL} (o200k_base), counted as the fake server received each request")
    for text, (prompt, completion) in zip(TURNS, per_turn, strict=True):
        print(
            f"  {text!r:48} prompt {prompt:6,}  completion {completion:4,}  total {prompt + completion:6,}"
        )
    search_total = sum(per_turn[0])
    print(f"search turn: {search_total:,} tokens (target under 1,500)")
    print(
        f"same turn with the 100 rows through the model: {first + second + per_turn[0][1]:,} tokens"
    )
    ordered = sorted(to_first[2:])
    print(
        f"chat:send -> first leads:batch, instant model, {args.runs} runs: "
        f"p50 {statistics.median(ordered) * 1000:.1f} ms, "
        f"p95 {ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000:.1f} ms"
    )


if __name__ == "__main__":
    asyncio.run(main())
