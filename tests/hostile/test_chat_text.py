"""Chat messages built to make the offline planner's patterns backtrack
(issue 10: `"find ctos " + "," * 16000` once held the event loop for seconds
per reply). Each reply must end within seconds, `/healthz` stay fast, and
another org's chat go on."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import socketio
from hostile_support import Target
from support import EventLog

MAX_TEXT = 16_000  # LEADSTREAM_MAX_TEXT's default: the longest message the server takes
HOSTILE_TEXTS = [
    ("find ctos " + "," * MAX_TEXT)[:MAX_TEXT],
    ("find ctos " + ", and then" * MAX_TEXT)[:MAX_TEXT],
    ("find ctos " + ",and" * MAX_TEXT)[:MAX_TEXT],
    ("find ctos " + "with " * MAX_TEXT)[: MAX_TEXT - 1] + ",",
    ("find ctos" + " in at" * MAX_TEXT)[: MAX_TEXT - 1] + "x",
    ("look up x " + "?" * MAX_TEXT)[: MAX_TEXT - 1] + "z",
    ("find " + "1," * MAX_TEXT)[: MAX_TEXT - 1] + "x",
    "a" * MAX_TEXT,
]
# A reply to any of them ends this fast (the old planner took ~30 s on the first).
REPLY_WITHIN_S = 5.0
MEMORY_BOUND = 50 * 1024 * 1024
PROBE_SAMPLES = 10
ROUNDS_AT_MOST = 20
# Refusals another limit may give a burst from one user; anything else must be ok.
CLEAR_REFUSALS = {"too_many_replies", "rate_limited"}


async def _chat_client(
    target: Target, org: str, user: str
) -> tuple[socketio.AsyncClient, EventLog]:
    """A websocket client whose `chat:done` and `chat:error` land in one log as `end`."""
    sio = socketio.AsyncClient(reconnection=False)
    log = EventLog()

    async def on_done(data: dict[str, Any]) -> None:
        await log.record("end", {"event": "chat:done", **data})

    async def on_error(data: dict[str, Any]) -> None:
        await log.record("end", {"event": "chat:error", **data})

    sio.on("chat:done", on_done)
    sio.on("chat:error", on_error)
    await sio.connect(target.url, auth={"token": target.token(org, user)}, transports=["websocket"])
    return sio, log


async def _send(sio: socketio.AsyncClient, text: str) -> dict[str, Any]:
    return await sio.call("chat:send", {"text": text}, timeout=REPLY_WITHIN_S)


async def _send_when_allowed(sio: socketio.AsyncClient, text: str) -> dict[str, Any]:
    """Send as a well-behaved client does: after a clear refusal, wait and retry."""
    for _ in range(20):
        ack = await _send(sio, text)
        if ack["ok"] or ack["error"]["code"] not in CLEAR_REFUSALS:
            return ack
        await asyncio.sleep(0.25)
    return ack


async def _get_when_allowed(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> tuple[int, Any]:
    """GET as a well-behaved client does: after a 429, wait its Retry-After and retry."""
    for _ in range(5):
        async with http.get(url, headers=headers) as response:
            if response.status != 429:
                return response.status, await response.json()
            await asyncio.sleep(float(response.headers["Retry-After"]))
    return 429, None


async def _reply_ends(log: EventLog, ack: dict[str, Any]) -> dict[str, Any]:
    """The `chat:done` or `chat:error` of an accepted message, within the bound."""
    return await log.wait_for(
        "end",
        lambda d: (
            d.get("messageId") == ack["messageId"]
            or (d["event"] == "chat:error" and d.get("conversationId") == ack["conversationId"])
        ),
        timeout=REPLY_WITHIN_S,
    )


async def test_backtracking_bait_does_not_hold_the_server(target: Target) -> None:
    attacker, attacks = await _chat_client(target, "victim", "mallory")
    bystander, replies = await _chat_client(target, "bystander", "bob")
    async with aiohttp.ClientSession() as http:
        async with http.post(
            target.url + "/api/leads",
            json={"name": "Kept Lead", "company": "Acme"},
            headers=target.headers("victim", "mallory"),
        ) as response:
            assert response.status == 201
            kept = (await response.json())["id"]
        # Warm the chat path (first reply, first search) before taking the baseline.
        await _reply_ends(replies, await _send(bystander, "Find 5 CTOs in fintech"))
        rss_before = target.rss()

        async with target.probe() as probe:
            # Several at once from one user: each is accepted or clearly refused.
            burst = await asyncio.gather(*(_send(attacker, HOSTILE_TEXTS[0]) for _ in range(4)))
            assert all(ack["ok"] or ack["error"]["code"] in CLEAR_REFUSALS for ack in burst), burst
            accepted = [ack for ack in burst if ack["ok"]]
            assert accepted, burst
            other_org = asyncio.create_task(_send(bystander, "Find 5 CTOs in fintech"))
            for ack in accepted:
                await _reply_ends(attacks, ack)
            other_ack = await other_org
            assert other_ack["ok"], other_ack
            other_end = await _reply_ends(replies, other_ack)
            assert other_end["event"] == "chat:done", other_end
            # Then every shape of bait, one after another, each answered in time,
            # in rounds until the probe has timed the server under it often enough.
            for _ in range(ROUNDS_AT_MOST):
                for text in HOSTILE_TEXTS:
                    ack = await _send_when_allowed(attacker, text)
                    assert ack["ok"], (text[:30], ack)
                    end = await _reply_ends(attacks, ack)
                    assert end["event"] in ("chat:done", "chat:error"), end
                if len(probe.samples) >= PROBE_SAMPLES:
                    break
        probe.assert_healthy()
        assert target.rss() - rss_before < MEMORY_BOUND

        # Nothing stored is lost: the lead, and the whole of a hostile message.
        # (The flood spent mallory's per-user rate limit: read as a client does, after Retry-After.)
        mallory = target.headers("victim", "mallory")
        status, _ = await _get_when_allowed(http, f"{target.url}/api/leads/{kept}", mallory)
        assert status == 200
        conversation = accepted[0]["conversationId"]
        status, body = await _get_when_allowed(
            http, f"{target.url}/api/conversations/{conversation}/messages", mallory
        )
        assert status == 200
        messages = body["messages"]
        assert HOSTILE_TEXTS[0] in [m["text"] for m in messages if m["role"] == "user"]
    await attacker.disconnect()
    await bystander.disconnect()
