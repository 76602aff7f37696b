"""The chat session (static/chat_session.js) without a DOM: run in a Web Worker,
where there is no `document`, it talks to the real server through the real
client (client.js, Socket.IO) and assembles replies, follows a conversation
asked for in another tab, and restores a stored one."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from browser_support import dev_token
from playwright.async_api import Page
from support import ServerProcess

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.browser]

# Runs in the worker: loads the session's scripts from the server, then plays the
# scenario the page posts: tab A sends a message; tab B (same user, same storage)
# reopens the conversation; A sends another, which B follows live.
WORKER = r"""
self.window = self;
const EVENTS = ["connection", "conversation", "transcript", "message", "reply", "text", "tool",
  "export", "note", "finished", "generating", "stopping"];

function record(session) {
  const events = [];
  for (const name of EVENTS) session.on(name, (data) => events.push([name, summary(name, data)]));
  return events;
}

function summary(name, data) {
  if (name === "connection") return data.state;
  if (name === "transcript") return data.state;
  if (name === "message") return { text: data.text, live: data.live };
  if (name === "text") return data.text;
  if (name === "tool") return `${data.tool.name}:${data.tool.status}`;
  if (name === "finished") return data.outcome;
  if (name === "reply" || name === "note") return data.kind || null;
  return data;
}

function next(session, name, test = () => true) {
  return new Promise((resolve) => {
    const off = session.on(name, (data) => {
      if (!test(data)) return;
      off();
      resolve(data);
    });
  });
}

function connected(session) {
  return session.connected ? Promise.resolve() : next(session, "connection", (c) => c.state === "connected");
}

function replyOf(reply) {
  return { messageId: reply.messageId, conversationId: reply.conversationId, text: reply.text,
    length: reply.length, done: reply.done, outcome: reply.outcome,
    tools: [...reply.tools.values()].map((t) => [t.name, t.status]) };
}

async function scenario({ base, token }) {
  importScripts(...["socket.io.min.js", "ui.js", "client.js", "chat_session.js"].map((f) => `${base}/static/${f}`));
  const ns = self.Leadstream;
  const values = new Map();
  const storage = { getItem: (k) => values.get(k) ?? null, setItem: (k, v) => values.set(k, v),
    removeItem: (k) => values.delete(k) };
  const open = () => {
    const client = ns.createClient({ base, token, io: self.io });
    const session = ns.createChatSession({ client, storage, storageKey: "conversation" });
    return { client, session, events: record(session) };
  };

  const a = open();
  a.session.start();
  a.client.connect();
  await connected(a.session);
  let finished = next(a.session, "finished");
  const sent = await a.session.send("Find 20 CTOs in fintech");
  const first = (await finished).reply;

  const b = open();
  const restored = next(b.session, "transcript", (t) => t.state === "restored");
  b.session.start();
  b.client.connect();
  await Promise.all([restored, connected(b.session)]);
  const bRestoreEvents = b.events.splice(0);

  const followed = next(b.session, "finished");
  finished = next(a.session, "finished");
  const sentAgain = await a.session.send("save them");
  const [second, seenByB] = [(await finished).reply, (await followed).reply];
  a.client.socket.disconnect();
  b.client.socket.disconnect();
  return {
    hasDocument: typeof document !== "undefined",
    sent, sentAgain, stored: storage.getItem("conversation"),
    conversationA: a.session.conversationId, conversationB: b.session.conversationId,
    first: replyOf(first), second: replyOf(second), seenByB: replyOf(seenByB),
    aEvents: a.events, bRestoreEvents, bLiveEvents: b.events,
    generatingB: b.session.generating,
  };
}

onmessage = async ({ data }) => {
  try {
    postMessage({ result: await scenario(data) });
  } catch (err) {
    postMessage({ error: String(err && err.stack || err) });
  }
};
"""

RUN_WORKER = """async ([source, token]) => {
  const url = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
  const worker = new Worker(url);
  const answer = new Promise((resolve, reject) => {
    worker.onmessage = ({ data }) => (data.error ? reject(new Error(data.error)) : resolve(data.result));
    worker.onerror = (e) => reject(new Error(e.message));
    setTimeout(() => reject(new Error("the worker's scenario did not finish in 30 s")), 30000);
  });
  worker.postMessage({ base: location.origin, token });
  try {
    return await answer;
  } finally {
    worker.terminate();
  }
}"""


def names(events: list[list[Any]], *skip: str) -> list[str]:
    """Event names in order, without `skip`, runs of one name collapsed."""
    out: list[str] = []
    for name, _ in events:
        if name not in skip and (not out or out[-1] != name):
            out.append(name)
    return out


async def stored_messages(
    http: aiohttp.ClientSession, base: str, token: str, conversation: str
) -> list[dict[str, Any]]:
    url = f"{base}/api/conversations/{conversation}/messages"
    async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status == 200, await response.text()
        return (await response.json())["messages"]


async def test_the_session_runs_without_a_dom_and_follows_replies_across_tabs(
    new_page: Any, http: aiohttp.ClientSession, leadstream: ServerProcess, org: str
) -> None:
    page: Page = await new_page()
    await page.goto(f"{leadstream.url}/static/chat.css")  # any page of the server's origin
    token = await dev_token(http, leadstream.url, org, "alice")
    result = await page.evaluate(RUN_WORKER, [WORKER, token])

    assert result["hasDocument"] is False
    assert result["sent"] is True and result["sentAgain"] is True
    conversation = result["conversationA"]
    assert conversation and result["stored"] == conversation == result["conversationB"]

    # Tab A: its reply was assembled from the streamed pieces, exactly as stored.
    messages = await stored_messages(http, leadstream.url, token, conversation)
    replies = [m for m in messages if m["role"] == "assistant"]
    assert [r["id"] for r in replies] == [
        result["first"]["messageId"],
        result["second"]["messageId"],
    ]
    first = result["first"]
    assert first["text"] == replies[0]["text"] and "I found 20 leads" in first["text"]
    assert first["length"] == len(first["text"])  # code points, as the server counts
    assert first["done"] is True and first["outcome"] is None
    assert ["search_leads", "done"] in first["tools"]
    streamed = "".join(text for name, text in result["aEvents"] if name == "text")
    assert streamed == first["text"] + result["second"]["text"]
    a_events = names(result["aEvents"], "text", "tool", "conversation", "connection")
    assert a_events[:6] == [
        "transcript",
        "message",
        "reply",
        "generating",
        "finished",
        "generating",
    ]
    generating = [on for name, on in result["aEvents"] if name == "generating"]
    assert generating == [True, False, True, False]
    assert ["message", {"text": "Find 20 CTOs in fintech", "live": True}] in result["aEvents"]

    # Tab B reopened the stored conversation: user message, then the reply's steps and text.
    b_restore = [event for event in result["bRestoreEvents"] if event[0] != "connection"]
    assert b_restore[:4] == [
        ["generating", False],
        ["conversation", conversation],
        ["transcript", "loading"],
        ["transcript", "restoring"],
    ]
    assert b_restore[4] == ["message", {"text": "Find 20 CTOs in fintech", "live": False}]
    assert names(b_restore[5:]) == ["reply", "tool", "text", "finished", "transcript"]
    assert b_restore[-1] == ["transcript", "restored"]
    assert "".join(text for name, text in b_restore if name == "text") == first["text"]

    # Tab B followed the reply tab A asked for, live, without generating itself.
    assert result["seenByB"]["messageId"] == result["second"]["messageId"]
    assert result["seenByB"]["text"] == result["second"]["text"] == replies[1]["text"]
    assert result["seenByB"]["tools"] == result["second"]["tools"]
    assert names(result["bLiveEvents"], "tool", "text")[:2] == ["reply", "finished"]
    assert "generating" not in names(result["bLiveEvents"])
    assert result["generatingB"] is False
