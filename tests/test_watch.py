"""`leadstream watch` notices a version gap and catches up by itself.

Two app instances share one SQLite file and no Redis, so changes made
through the second never reach the watcher live: the next change it does
get skips versions, and it must fetch the missed ones."""

from __future__ import annotations

import asyncio
import io

from support import bearer

from leadstream.server.cli.chat_client import FeedWatcher


async def test_watch_catches_up_after_a_gap(settings, start_server, token, http):
    one = await start_server(settings)
    two = await start_server(settings)
    out = io.StringIO()
    watcher = FeedWatcher(str(one.make_url("")), token())
    watcher.out = out
    stop = asyncio.Event()
    running = asyncio.create_task(watcher.run(stop))
    async with asyncio.timeout(10):
        while "watching the lead feed at v0" not in out.getvalue():
            await asyncio.sleep(0.05)
    headers = bearer(token())
    for server, name in ((one, "Ann"), (two, "Ben"), (two, "Cid"), (one, "Dee")):
        response = await http.post(
            server.make_url("/api/leads"), json={"name": name}, headers=headers
        )
        assert response.status == 201
    async with asyncio.timeout(10):
        while "Dee" not in out.getvalue():
            await asyncio.sleep(0.05)
    stop.set()
    assert await running == 0
    text = out.getvalue()
    assert "caught up from v1: 3 missed changes" in text
    for version, name in ((1, "Ann"), (2, "Ben"), (3, "Cid"), (4, "Dee")):
        assert f"v{version} insert" in text and name in text
    assert text.count("Dee") == 1, "nothing twice"
