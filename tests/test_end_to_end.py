"""The product's main path through real sockets: search, save, live feed, export."""

from __future__ import annotations

import csv
import io

from support import bearer

from leadstream.server.jobs.exports import COLUMNS
from leadstream.store.titles import title_words

CTO_WORDS = ["chief", "technology", "officer"]


def is_cto(title: str) -> bool:
    words = title_words(title)
    return any(words[i : i + 3] == CTO_WORDS for i in range(len(words)))


async def test_find_save_live_feed_and_export(server, connect, token, http):
    alice = await connect(server, token("acme", "alice"))
    colleague = await connect(server, token("acme", "bob"))
    outsider = await connect(server, token("globex", "carol"))
    for client in (colleague, outsider):
        ack = await client.call("leads:subscribe", {})
        assert ack == {"ok": True, "version": 0, "changes": [], "reset": False}

    # 1. Search: tool events, batches in seq order, every row a CTO with a phone.
    done = await alice.chat("Find 100 CTOs in fintech with phone numbers")
    assert done["stopped"] is False
    conversation_id = done["ack"]["conversationId"]
    tools = alice.log.of("chat:tool")
    assert tools[0]["status"] == "started"
    assert tools[-1]["status"] == "done" and tools[-1]["name"] == "search_leads"
    assert any(t["status"] == "progress" for t in tools)
    batches = alice.log.of("leads:batch")
    assert [b["seq"] for b in batches] == list(range(len(batches)))
    assert len([b for b in batches if b["leads"]]) >= 2, "rows must arrive in several batches"
    assert batches[-1]["done"] is True and all(not b["done"] for b in batches[:-1])
    rows = [row for b in batches for row in b["leads"]]
    assert 0 < len(rows) <= 100
    assert batches[-1]["total"] == len(rows)
    assert all(row["phones"] for row in rows)
    assert all(is_cto(row["title"]) for row in rows), [r["title"] for r in rows]
    assert all(row["industry"] == "fintech" for row in rows)
    assert all("id" not in row for row in rows), "nothing is saved yet"
    text = "".join(d["text"] for d in alice.log.of("chat:delta"))
    assert f"I found {len(rows)} leads" in text

    # 2. Save: the colleague in the same org sees the inserts; the other org nothing.
    await alice.chat("save them", conversation_id)
    feed = await colleague.log.wait_for(
        "leads:changes",
        lambda _: sum(len(e["changes"]) for e in colleague.log.of("leads:changes")) >= len(rows),
    )
    assert feed["changes"][0]["op"] == "insert"
    changes = [c for e in colleague.log.of("leads:changes") for c in e["changes"]]
    assert [c["version"] for c in changes] == list(range(1, len(rows) + 1))
    assert {c["lead"]["personId"] for c in changes} == {row["personId"] for row in rows}
    assert len(colleague.log.of("leads:changes")) <= 2, (
        "a bulk save is a few events, not one per row"
    )
    assert outsider.log.events == []

    listed = await http.get(server.make_url("/api/leads?limit=200"), headers=bearer(token()))
    assert listed.status == 200
    body = await listed.json()
    assert len(body["leads"]) == len(rows) and body["version"] == len(rows)

    # 3. Export: export:ready with a signed URL that downloads without a bearer token.
    await alice.chat("export to csv", conversation_id)
    ready = await alice.log.wait_for("export:ready")
    assert ready["rows"] == len(rows)
    download = await http.get(server.make_url(ready["url"]))
    assert download.status == 200
    assert download.headers["Content-Type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(await download.text())))
    assert table[0] == list(COLUMNS)
    assert len(table) == len(rows) + 1
    assert {line[0] for line in table[1:]} == {row["name"] for row in rows}
    assert outsider.log.events == []


async def test_search_rows_carry_ids_of_leads_already_saved(server, connect, token):
    alice = await connect(server, token())
    done = await alice.chat("find 10 CTOs in fintech")
    await alice.chat("save them", done["ack"]["conversationId"])
    alice.log.events.clear()
    await alice.chat("find 20 CTOs in fintech")
    rows = [row for b in alice.log.of("leads:batch") for row in b["leads"]]
    saved = [row for row in rows if "id" in row]
    assert len(saved) == 10 and all(row["createdAt"] for row in saved)


async def test_export_my_saved_leads_after_a_search_exports_the_saved_ones(server, connect, token):
    """`export my saved leads` acts on the saved leads, not on the last search."""
    client = await connect(server, token())
    saved = await client.chat("Find 30 CTOs in fintech and save them")
    await client.chat("export my saved leads to csv", saved["conversationId"])
    tool = await client.log.wait_for(
        "chat:tool", lambda d: d["name"] == "export_leads" and d["status"] != "started"
    )
    assert tool["status"] == "done" and tool["args"] == {}, tool
    ready = await client.log.wait_for("export:ready")
    assert ready["rows"] == 30
    # The card and the job are paired by id, not by order (protocol 2).
    assert tool["result"] == {"jobId": ready["jobId"]}
