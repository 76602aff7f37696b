"""Where the counters live: the backend protocol, and the in-process backend.

The Redis backend is in `redis_backend.py`, apart, so that this package's
core (and `server/config.py`, which imports its policy) does not import the
Redis client and its connection settings.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from leadstream.server.ratelimit.policy import Rule
from leadstream.server.ratelimit.window import WindowCount, weighted_count


class RateLimitBackendError(Exception):
    """The backend could not answer (Redis down, slow or refusing); the limiter fails open."""


class RateLimitBackend(Protocol):
    """Counts requests in sliding-window counters, atomically for all rules of a request."""

    async def hit(self, rules: Sequence[Rule], cost: int) -> list[WindowCount]:
        """Read every rule's counters; when all fit, count `cost` on each.

        :raises RateLimitBackendError: when the store of the counters is unavailable.
        """
        ...


class InProcessRateLimitBackend:
    """Counters in this process's memory: the embedded default, exact for one instance.

    :param clock: seconds from a monotonic clock (tests pass a fake one).
    :param sweep_every_s: how often counters idle for two windows are dropped.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, sweep_every_s: float = 60.0
    ) -> None:
        self._clock = clock
        self._sweep_every_s = sweep_every_s
        self._next_sweep = clock() + sweep_every_s
        # (key, window ms) -> [window index, current count, previous count, expires at]
        self._windows: dict[tuple[str, int], list[float]] = {}

    def __len__(self) -> int:
        return len(self._windows)

    async def hit(self, rules: Sequence[Rule], cost: int) -> list[WindowCount]:
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        counts: list[WindowCount] = []
        indexes: list[int] = []
        all_fit = True
        # No await below: the read and the update are one step for the event loop.
        for rule in rules:
            window = rule.limit.window_s
            index = math.floor(now / window)
            previous = current = 0
            entry = self._windows.get((rule.key, rule.limit.window_ms))
            if entry is not None:
                if entry[0] == index:
                    current, previous = int(entry[1]), int(entry[2])
                elif entry[0] == index - 1:
                    previous = int(entry[1])
            elapsed = now - index * window
            fits = weighted_count(previous, current, elapsed, window) + cost <= rule.limit.requests
            all_fit = all_fit and fits
            counts.append(WindowCount(previous, current, elapsed, fits))
            indexes.append(index)
        if all_fit:
            for rule, count, index in zip(rules, counts, indexes, strict=True):
                expires = (index + 2) * rule.limit.window_s
                entry = [index, count.current + cost, count.previous, expires]
                self._windows[rule.key, rule.limit.window_ms] = entry
        return counts

    def _sweep(self, now: float) -> None:
        stale = [key for key, entry in self._windows.items() if entry[3] <= now]
        for key in stale:
            del self._windows[key]
        self._next_sweep = now + self._sweep_every_s
