"""How fast to go again: `Backoff` spaces out retries, `TokenBucket` spaces
out requests, `PacedCalls` spreads a burst of calls over turns of the event
loop.

Used by the job queues (retrying a job, surviving a Redis outage), the
OpenAI-compatible model client and the RocketReach provider (retrying a
request), the RocketReach provider again (its client-side rate limit) and
the per-connection event limit of the Socket.IO server; the teardown of
websocket sessions whose connections ended.

This module is a leaf: it imports nothing of ours, so every layer may use it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """A bounded number of tries with capped, jittered exponential delays
    between them.

    The delay after try `n` is drawn between half and all of
    `min(max_delay_s, base_delay_s * 2 ** (n - 1))`, so that clients that
    failed together do not all come back together.

    :param attempts: tries in all, the first one included.
    :param base_delay_s: the delay after the first try; it doubles after each.
    :param max_delay_s: the cap on one delay.
    """

    attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0

    def delay(self, tries: int) -> float:
        """How long to wait after `tries` tries, with jitter (between half and all of it)."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (tries - 1))
        return random.uniform(ceiling / 2, ceiling)


class TokenBucket:
    """A token bucket: at most `rate` takes a second on average, `burst` of
    them back to back.

    Two ways to take a token: `try_take()` answers at once (a limit that
    refuses, as the per-connection event limit does), `acquire()` waits for
    one (a limit that paces, as a provider's client-side rate limit does;
    callers are served in order). `hold()` hands out nothing for a while, so
    that a server's `Retry-After` holds back every caller, not only the one
    that got it.

    :param rate: tokens added per second.
    :param burst: the most tokens kept (and the tokens it starts with); 1
        spaces takes evenly.
    """

    __slots__ = ("_burst", "_lock", "_rate", "_resume_at", "_tokens", "_updated")

    def __init__(self, rate: float, *, burst: int = 1) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self._rate = rate
        self._burst = burst
        self._tokens = float(burst)
        self._updated = time.monotonic()
        self._resume_at = 0.0
        # Made on the first `acquire()`: a bucket that only refuses never needs one.
        self._lock: asyncio.Lock | None = None

    def hold(self, seconds: float) -> None:
        """Hand out no token for the next `seconds`."""
        self._resume_at = max(self._resume_at, time.monotonic() + seconds)

    def try_take(self) -> bool:
        """Take a token if there is one now; False (nothing taken) otherwise."""
        now = time.monotonic()
        if now < self._resume_at:
            return False
        self._refill(now)
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    async def acquire(self) -> None:
        """Wait for a token and take it."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            while True:
                now = time.monotonic()
                if now < self._resume_at:
                    await asyncio.sleep(self._resume_at - now)
                    continue
                self._refill(now)
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self._rate)

    def _refill(self, now: float) -> None:
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now


class PacedCalls:
    """Makes calls at most `per_turn` per turn of the event loop, in order.

    When thousands of connections end at once (a balancer restart), the end
    of each wakes a session whose teardown (engine.io and Socket.IO
    disconnect handlers) costs tens of µs; made all in one turn of the loop,
    they would keep it from anything else, `/healthz` included, for the
    sum. Paced, each turn does a bounded share and new requests are served
    in between.
    """

    def __init__(self, per_turn: int) -> None:
        self.per_turn = per_turn
        self._pending: deque[Callable[[], None]] = deque()
        self._scheduled = False

    def add(self, call: Callable[[], None]) -> None:
        self._pending.append(call)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._turn)

    def __len__(self) -> int:
        return len(self._pending)

    def _turn(self) -> None:
        for _ in range(min(self.per_turn, len(self._pending))):
            self._pending.popleft()()
        if self._pending:
            asyncio.get_running_loop().call_soon(self._turn)
        else:
            self._scheduled = False
