"""The page's live feed puts overtaken versions back in order.

Two instances writing one org publish independently, so `leads:changes` of
version n+1 can reach a page before version n. The relay between the page
and the server holds change events and hands them over in reverse order: the
page waits for the missing version instead of resyncing. A version that
never comes is a real gap: after the short wait the page catches up with
`leads:subscribe {since}`."""

from __future__ import annotations

import pytest
from browser_support import LeadsApi, SocketRelay, eventually, row_names, settles
from playwright.async_api import expect

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.browser]


def deliver_reversed(relay: SocketRelay, *, drop_first: bool = False) -> None:
    """Stop holding; send the held frames newest first (without the oldest if `drop_first`)."""
    relay.hold()
    held, relay.held = relay.held, []
    for ws, frame in reversed(held[1:] if drop_first else held):
        ws.send(frame)


async def test_overtaken_versions_wait_and_real_gaps_catch_up(app, other_client: LeadsApi) -> None:
    relay = SocketRelay()
    page = await app(before_load=relay.attach)
    lists: list[str] = []
    page.on("request", lambda r: lists.append(r.url) if "/api/leads?" in r.url else None)
    await expect(page.get_by_text("No saved leads yet")).to_be_visible()
    assert len(relay.sent_events("leads:subscribe")) == 1

    # v1 and v2 arrive as v2, v1: both applied, no resync, no reload.
    relay.hold("leads:changes")
    await other_client.create(name="Ann First", company="One")
    await other_client.create(name="Ben Second", company="Two")
    await eventually(lambda: relay.held_names() == ["leads:changes"] * 2)
    loads = len(lists)
    deliver_reversed(relay)
    await settles(lambda: row_names(page, "leads"), ["Ben Second", "Ann First"])
    assert len(relay.sent_events("leads:subscribe")) == 1
    assert len(lists) == loads

    # v3 is lost on the way, v4 arrives: after the wait, the page asks since v2.
    relay.hold("leads:changes")
    await other_client.create(name="Cid Third", company="Three")
    await other_client.create(name="Dee Fourth", company="Four")
    await eventually(lambda: relay.held_names() == ["leads:changes"] * 2)
    deliver_reversed(relay, drop_first=True)
    await settles(
        lambda: row_names(page, "leads"), ["Dee Fourth", "Cid Third", "Ben Second", "Ann First"]
    )
    subscribes = relay.sent_events("leads:subscribe")
    assert len(subscribes) == 2 and '"since":2' in str(subscribes[-1]).replace(" ", "")
    assert len(lists) == loads  # caught up from the change log, not reloaded
