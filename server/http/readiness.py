"""`/readyz`: whether this instance can serve, part by part.

Each part is `ok` or `failed`, with no internal detail (host names and
exception text go to the log, not to anonymous callers). Results are kept
for a moment, so a flood of probes costs one check per part per interval:
the store and Redis each second, the model endpoint every 30 s. The clients
are the app's own; nothing is opened per call.

The store and Redis decide readiness (`503` when either fails). The model
endpoint is reported but does not: when the LLM provider is unreachable every
instance is, and taking them all out of the balancer would turn a degraded
assistant into an outage of lists, exports and the page itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from leadstream.server.redis_connections import RedisClient
from leadstream.store.base import Store

log = logging.getLogger(__name__)
Check = Callable[[], Awaitable[None]]
CHECK_TIMEOUT_S = 2.0


@dataclass
class _Cached:
    check: Check
    every_s: float
    decides: bool
    result: str = "failed"
    checked_at: float = field(default=-1e18)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Readiness:
    """The parts `/readyz` checks, each cached for its interval.

    :param store: pinged each second at most.
    :param redis: the app's Redis client when `REDIS_URL` is set [none].
    :param model_url: the OpenAI-compatible endpoint when a model is configured
        (its host must accept a TCP connection) [none: the offline planner].
    """

    def __init__(
        self, store: Store, *, redis: RedisClient | None = None, model_url: str | None = None
    ) -> None:
        self._parts: dict[str, _Cached] = {"store": _Cached(store.ping, 1.0, decides=True)}
        if redis is not None:
            client = redis

            async def ping_redis() -> None:
                await client.ping()

            self._parts["redis"] = _Cached(ping_redis, 1.0, decides=True)
        if model_url is not None:
            self._parts["model"] = _Cached(_reachable(model_url), 30.0, decides=False)

    async def report(self) -> tuple[bool, dict[str, str]]:
        """(ready, {part: "ok" | "failed"})."""
        names = list(self._parts)
        results = await asyncio.gather(*(self._result(name) for name in names))
        checks = dict(zip(names, results, strict=True))
        ready = all(checks[name] == "ok" for name in names if self._parts[name].decides)
        return ready, checks

    async def _result(self, name: str) -> str:
        part = self._parts[name]
        async with part.lock:  # concurrent probes wait for one check
            if time.monotonic() - part.checked_at < part.every_s:
                return part.result
            try:
                async with asyncio.timeout(CHECK_TIMEOUT_S):
                    await part.check()
                part.result = "ok"
            except Exception as exc:  # noqa: BLE001 - any failure means not ready; logged
                log.warning("readiness: %s failed: %r", name, exc)
                part.result = "failed"
            part.checked_at = time.monotonic()
            return part.result


def _reachable(url: str) -> Check:
    """A check that the URL's host accepts a TCP connection."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = parts.port or (443 if parts.scheme == "https" else 80)

    async def connect() -> None:
        _, writer = await asyncio.open_connection(host, port)
        writer.close()
        await writer.wait_closed()

    return connect
