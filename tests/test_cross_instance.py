"""Two app instances in one process sharing a real redis-server and one SQLite
file (so a test can slow a search down): stop and resume a reply that runs on
the other instance."""

from __future__ import annotations

import asyncio

import pytest
from support import settings_with
from test_realtime import SlowDirectory


@pytest.fixture
async def two_instances(settings, redis_server, start_server):
    shared = settings_with(settings, redis_url=redis_server.url)
    slow = lambda store: SlowDirectory(store, chunk_size=5)  # noqa: E731
    return await start_server(shared, provider=slow), await start_server(shared, provider=slow)


async def test_stop_and_resume_a_reply_running_on_another_instance(two_instances, connect, token):
    one, two = two_instances
    tab_one = await connect(one, token())
    tab_two = await connect(two, token())
    ack = await tab_one.call("chat:send", {"text": "find 500 CTOs"})
    await tab_two.log.wait_for("leads:batch")  # the reply runs on instance one

    resumed = await tab_two.call(
        "chat:resume",
        {"conversationId": ack["conversationId"], "messageId": ack["messageId"], "offset": 0},
    )
    assert resumed["ok"] and resumed["done"] is False
    assert resumed["text"].startswith("I can fetch at most 200 leads per search")

    stopped = await tab_two.call("chat:stop", {"conversationId": ack["conversationId"]})
    assert stopped == {"ok": True, "stopped": True}
    done = await tab_two.log.wait_for("chat:done", lambda d: d["messageId"] == ack["messageId"])
    assert done["stopped"] is True
    await tab_one.log.wait_for("chat:done")
    await asyncio.sleep(0.3)
    again = await tab_two.call("chat:stop", {"conversationId": ack["conversationId"]})
    assert again == {"ok": True, "stopped": False}
    after = await tab_two.call(
        "chat:resume",
        {"conversationId": ack["conversationId"], "messageId": ack["messageId"], "offset": 0},
    )
    assert after["done"] is True


async def test_a_conversation_runs_one_reply_across_instances(two_instances, connect, token):
    one, two = two_instances
    tab_one = await connect(one, token())
    tab_two = await connect(two, token())
    ack = await tab_one.call("chat:send", {"text": "find 500 CTOs"})
    await tab_two.log.wait_for("leads:batch")  # the reply runs on instance one

    follow_up = {"text": "find 5 CTOs", "conversationId": ack["conversationId"]}
    busy = await tab_two.call("chat:send", follow_up)
    assert busy["ok"] is False and busy["error"]["code"] == "conversation_busy"

    await tab_two.call("chat:stop", {"conversationId": ack["conversationId"]})
    await tab_two.log.wait_for("chat:done", lambda d: d["messageId"] == ack["messageId"])
    # Once it ended, the conversation's next reply may run on either instance.
    async with asyncio.timeout(10):
        while not (again := await tab_two.call("chat:send", follow_up))["ok"]:
            assert again["error"]["code"] == "conversation_busy"
            await asyncio.sleep(0.05)  # the claim is released just after chat:done
    done = await tab_two.log.wait_for("chat:done", lambda d: d["messageId"] == again["messageId"])
    assert done["stopped"] is False
