"""The store's change listeners (`Store.subscribe_changes`), kept once for
every backend: each is called on the event loop after a commit that changed
leads, with a copy of that commit's changes, in commit order."""

from __future__ import annotations

import asyncio

from leadstream.store.base import ChangeListener
from leadstream.store.records import Change


class ChangeListeners:
    """Who hears of committed lead changes, and telling them."""

    def __init__(self) -> None:
        self._listeners: list[ChangeListener] = []

    def add(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def notify(self, loop: asyncio.AbstractEventLoop, changes: list[Change]) -> None:
        """Schedule each listener with `changes` on `loop` (from any thread);
        nothing when there are no changes. Called in commit order, they run
        in that order."""
        if not changes:
            return
        for listener in self._listeners:
            loop.call_soon_threadsafe(listener, list(changes))
