"""The live lead feed: `leads:subscribe` / `leads:unsubscribe` and `leads:changes`.

The store calls `LeadChangeFeed.on_commit` after each commit, in commit
order. One worker task emits what has accumulated, grouped per org, so a
burst of writes (or one bulk save of 500 leads) becomes a few events instead
of one per record, and every org's changes leave in version order.

A subscriber joins the org's feed room *before* reading the change log, so
no change falls between the log read and the live events; a change may then
arrive twice (in the ack and live), and clients skip versions they have
already applied.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any

import socketio

from leadstream.realtime.acks import EventGate, acknowledged
from leadstream.realtime.emitter import Emitter
from leadstream.realtime.payloads import LeadsSubscribe
from leadstream.realtime.rooms import org_feed_room
from leadstream.store.base import LeadStore
from leadstream.store.records import Change

log = logging.getLogger(__name__)


class LeadChangeFeed:
    """Emits committed lead changes to each org's subscribers.

    :param emitter: where events go.
    :param max_per_event: changes per `leads:changes` event at most.
    """

    def __init__(self, emitter: Emitter, *, max_per_event: int = 500) -> None:
        self._emitter = emitter
        self._max_per_event = max_per_event
        self._queue: asyncio.Queue[list[Change]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    def on_commit(self, changes: list[Change]) -> None:
        """Store listener: called on the event loop after each commit."""
        self._queue.put_nowait(changes)

    def start(self) -> None:
        self._worker = asyncio.create_task(self._run(), name="lead-change-feed")

    async def stop(self) -> None:
        """Emit what is queued, then stop."""
        if self._worker is None:
            return
        await self._queue.join()
        self._worker.cancel()
        await asyncio.gather(self._worker, return_exceptions=True)
        self._worker = None

    async def _run(self) -> None:
        while True:
            batches = [await self._queue.get()]
            while not self._queue.empty():
                batches.append(self._queue.get_nowait())
            by_org: dict[str, list[Change]] = defaultdict(list)
            for batch in batches:
                for change in batch:
                    by_org[change.org].append(change)
            try:
                for org, changes in by_org.items():
                    await self._emit(org, changes)
            except Exception:
                # Subscribers catch up through `leads:subscribe {since}`; the
                # feed itself must keep running.
                log.exception("emitting leads:changes failed")
            finally:
                for _ in batches:
                    self._queue.task_done()

    async def _emit(self, org: str, changes: list[Change]) -> None:
        for start in range(0, len(changes), self._max_per_event):
            part = changes[start : start + self._max_per_event]
            payload = {"version": part[-1].version, "changes": [c.to_wire() for c in part]}
            await self._emitter.to_org_feed(org, "leads:changes", payload)


def register_feed_events(
    sio: socketio.AsyncServer, store: LeadStore, gate: EventGate, *, page: int
) -> None:
    """`leads:subscribe` and `leads:unsubscribe` handlers.

    :param page: changes a subscribe may replay; a client further behind gets
        `reset: true` and reloads (cheaper than replaying a long log).
    """

    async def subscribe(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        payload = LeadsSubscribe.model_validate(data)
        session = await sio.get_session(sid)
        org = session["org"]
        await sio.enter_room(sid, org_feed_room(org))
        if payload.since is None:
            version = await store.current_version(org)
            return {"ok": True, "version": version, "changes": [], "reset": False}
        result = await store.changes_since(org, payload.since, limit=page + 1)
        if result.reset or len(result.changes) > page:
            version = await store.current_version(org)
            return {"ok": True, "version": version, "changes": [], "reset": True}
        changes = [c.to_wire() for c in result.changes]
        return {"ok": True, "version": result.version, "changes": changes, "reset": False}

    async def unsubscribe(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        session = await sio.get_session(sid)
        await sio.leave_room(sid, org_feed_room(session["org"]))
        return {"ok": True}

    sio.on("leads:subscribe", acknowledged("leads:subscribe", subscribe, gate))
    sio.on("leads:unsubscribe", acknowledged("leads:unsubscribe", unsubscribe, gate))
