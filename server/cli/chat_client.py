"""`leadstream chat`: a terminal client that sends one message and shows the
streamed reply, tool steps and a progress bar while leads arrive."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, TextIO

import orjson
import socketio

BAR_WIDTH = 30
# `watch` reconnects after 0-4 s, then about 4, 8, 16, 30 s (each +-2 s).
RECONNECT_DELAY_S = 2.0
RECONNECT_DELAY_MAX_S = 30.0


class TerminalChat:
    """Prints one exchange as it streams.

    :param out: where to write (stdout by default).
    :param export_wait_s: how long to wait for an export's link after the reply.
    """

    def __init__(
        self, url: str, token: str, *, out: TextIO = sys.stdout, export_wait_s: float = 120
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.out = out
        self.export_wait_s = export_wait_s
        self.sio = socketio.AsyncClient(reconnection=False)
        self.message_id: str | None = None
        self.finished = asyncio.Event()
        self.exports_started = 0  # export_leads calls that finished
        self.exports_settled = 0  # export:ready / export:failed received
        self.export_event = asyncio.Event()
        self.failed = False
        self._early: list[tuple[str, dict[str, Any]]] = []
        for event in ("chat:delta", "chat:tool", "leads:batch", "chat:done", "chat:error"):
            self.sio.on(event, self._handler(event))
        for event in ("export:progress", "export:ready", "export:failed"):
            self.sio.on(event, self._export_handler(event))

    async def run(self, text: str, conversation_id: str | None = None) -> int:
        """Send `text`, print the reply; returns a process exit code."""
        try:
            await self.sio.connect(self.url, auth={"token": self.token}, transports=["websocket"])
        except socketio.exceptions.ConnectionError as exc:
            self._print(f"could not connect to {self.url}: {exc}\n")
            return 1
        try:
            payload: dict[str, Any] = {"text": text, "clientMessageId": uuid.uuid4().hex}
            if conversation_id:
                payload["conversationId"] = conversation_id
            ack = await self.sio.call("chat:send", payload, timeout=30)
            if not ack.get("ok"):
                error = ack.get("error", {})
                self._print(f"error: {error.get('message')} ({error.get('code')})\n")
                return 1
            self.message_id = ack["messageId"]
            for event, data in self._early:
                await self._handle(event, data)
            await self.finished.wait()
            if self.exports_settled < self.exports_started:
                self._print("waiting for the export...\n")
                async with asyncio.timeout(self.export_wait_s):
                    while self.exports_settled < self.exports_started:
                        self.export_event.clear()
                        await self.export_event.wait()
            self._print(f"\nconversation: {ack['conversationId']}\n")
            return 1 if self.failed else 0
        finally:
            await self.sio.disconnect()

    def _handler(self, event: str):
        async def handle(data: dict[str, Any]) -> None:
            if self.message_id is None:  # events may overtake the ack
                self._early.append((event, data))
                return
            await self._handle(event, data)

        return handle

    async def _handle(self, event: str, data: dict[str, Any]) -> None:
        if event == "leads:batch":
            if data["done"]:
                self._print(f"\r  [{'#' * BAR_WIDTH}] {data.get('total', 0)} leads\n")
            return
        if data.get("messageId") != self.message_id:
            return
        if event == "chat:delta":
            self._print(data["text"])
        elif event == "chat:tool":
            self._tool(data)
        elif event == "chat:done":
            stopped = " (stopped)" if data.get("stopped") else ""
            self._print(f"\n--{stopped}\n")
            self.finished.set()
        elif event == "chat:error":
            self._print(f"\nerror: {data['error']['message']} ({data['error']['code']})\n")
            self.failed = True
            self.finished.set()

    def _tool(self, data: dict[str, Any]) -> None:
        status, name = data["status"], data["name"]
        if status == "started":
            self._print(f"\n> {name} {orjson.dumps(data.get('args', {})).decode()}\n")
        elif status == "progress":
            progress = data.get("progress") or {}
            done, total = progress.get("done", 0), progress.get("total") or 0
            filled = BAR_WIDTH * done // total if total else 0
            bar = "#" * filled + "-" * (BAR_WIDTH - filled)
            self._print(f"\r  [{bar}] {done}/{total} leads")
        elif status == "done":
            self._print(f"  done: {data.get('summary', '')}\n")
            if name == "export_leads":
                self.exports_started += 1
        elif status == "error":
            self._print(f"\n  error: {data['error']['message']}\n")

    def _export_handler(self, event: str):
        async def handle(data: dict[str, Any]) -> None:
            if event == "export:progress":
                self._print(f"\r  export {data['done']}/{data['total']} rows")
                return
            if event == "export:ready":
                self._print(f"  CSV ready ({data['rows']} rows): {self.url}{data['url']}\n")
            else:
                self._print(f"  export failed: {data['error']['message']}\n")
            self.exports_settled += 1
            self.export_event.set()

        return handle

    def _print(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()


class VersionOrder:
    """Puts one org's `leads:changes` back in version order.

    Several instances write one org and publish independently, so version
    n+1 can overtake n by a few milliseconds. A change ahead of a missing
    version waits here up to `wait_s`; when the missing ones arrive, all that
    is contiguous comes out in order. Only a gap still open after `wait_s` is
    a real loss: then `on_gap` runs (catch up with `leads:subscribe {since}`).
    The widget's feed (static/leads.js) does the same.

    :param on_gap: called (as a task) when a gap outlives `wait_s`.
    :param wait_s: how long an early change waits for the ones before it [1 s].
    """

    def __init__(
        self, on_gap: Callable[[], Coroutine[Any, Any, None]], *, wait_s: float = 1.0
    ) -> None:
        self.version: int | None = None
        #: changes that arrived ahead of a missing version (waited, not lost).
        self.reordered = 0
        self._on_gap = on_gap
        self._wait_s = wait_s
        self._early: dict[int, dict[str, Any]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._catching_up: asyncio.Task[None] | None = None

    def start_at(self, version: int) -> None:
        """Continue from `version` (a fresh load, or a `reset`)."""
        self.version = version
        self._early = {v: c for v, c in self._early.items() if v > version}
        self._watch_gap(restart=True)

    def push(self, changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Take changes (any order, repeats allowed); the ones to apply now, in order."""
        if self.version is None:
            return []  # not subscribed yet: the subscribe ack brings them
        for change in changes:
            if change["version"] > self.version + 1 and change["version"] not in self._early:
                self.reordered += 1
            if change["version"] > self.version:
                self._early[change["version"]] = change
        ready = []
        while self.version + 1 in self._early:
            ready.append(self._early.pop(self.version + 1))
            self.version += 1
        self._watch_gap(restart=bool(ready))
        return ready

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _watch_gap(self, *, restart: bool) -> None:
        # One timer per open gap: a gap that closed and a new one opening restart it.
        if self._timer is not None and (restart or not self._early):
            self._timer.cancel()
            self._timer = None
        if self._early and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._wait_s, self._expired)

    def _expired(self) -> None:
        self._timer = None
        if self._early and (self._catching_up is None or self._catching_up.done()):
            self._catching_up = asyncio.create_task(self._on_gap(), name="feed-catch-up")


class FeedWatcher:
    """`leadstream watch`: prints the org's live lead changes in version
    order (`VersionOrder`). On a gap that stays open, or after a reconnect,
    it asks for what it missed with `leads:subscribe {since}` (a `reset`
    says to reload).

    :param out: where to write (stdout by default).
    :param reorder_s: how long a change waits for earlier ones [1 s].
    """

    def __init__(
        self, url: str, token: str, *, out: TextIO = sys.stdout, reorder_s: float = 1.0
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.out = out
        self.order = VersionOrder(self._subscribe, wait_s=reorder_s)
        # Jittered backoff: after a server restart its clients come back spread
        # over seconds, not all in the same instant (python-socketio's factor is
        # seconds added or taken, whatever the delay: here up to the first delay).
        self.sio = socketio.AsyncClient(
            reconnection=True,
            reconnection_delay=RECONNECT_DELAY_S,
            reconnection_delay_max=RECONNECT_DELAY_MAX_S,
            randomization_factor=RECONNECT_DELAY_S,
        )
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on("leads:changes", self._on_changes)

    async def run(self, stop: asyncio.Event) -> int:
        try:
            await self.sio.connect(self.url, auth={"token": self.token}, transports=["websocket"])
        except socketio.exceptions.ConnectionError as exc:
            self.out.write(f"could not connect to {self.url}: {exc}\n")
            return 1
        await stop.wait()
        self.order.close()
        await self.sio.disconnect()
        return 0

    @property
    def version(self) -> int | None:
        """The last version printed (None before the first subscribe)."""
        return self.order.version

    async def _on_connect(self) -> None:
        await self._subscribe()

    async def _on_disconnect(self, *reason: Any) -> None:
        self.out.write("disconnected; reconnecting...\n")
        self.out.flush()

    async def _subscribe(self) -> None:
        payload = {} if self.version is None else {"since": self.version}
        ack = await self.sio.call("leads:subscribe", payload, timeout=30)
        if not ack.get("ok"):
            self.out.write(f"subscribe failed: {ack['error']['message']}\n")
            return
        if ack["reset"]:
            self.out.write(f"the change log no longer reaches v{self.version}: reload the list\n")
        elif self.version is not None:
            self.out.write(
                f"caught up from v{self.version}: {len(ack['changes'])} missed changes\n"
            )
        changes = ack["changes"]
        if self.version is None or ack["reset"]:
            self.order.start_at(changes[0]["version"] - 1 if changes else ack["version"])
        self._print(self.order.push(changes))
        self.out.write(f"watching the lead feed at v{self.version}\n")
        self.out.flush()

    async def _on_changes(self, event: dict[str, Any]) -> None:
        self._print(self.order.push(event["changes"]))

    def _print(self, changes: list[dict[str, Any]]) -> None:
        for change in changes:
            lead = change.get("lead") or {}
            who = f" {lead.get('name')} ({lead.get('company') or '-'})" if lead else ""
            self.out.write(f"v{change['version']} {change['op']:6} {change['id']}{who}\n")
        self.out.flush()
