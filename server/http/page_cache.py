"""A cache of `GET /api/leads` pages.

Keys carry the org's current change-log version, so any change of an org
makes its old pages unreachable at once (they age out by TTL), other orgs'
pages stay, and nothing ever needs a pattern delete. In-process by default
(bounded by bytes, expired pages dropped), Redis (shared by every instance,
bounded by its own `maxmemory`) when `REDIS_URL` is set; a Redis failure is
a miss, logged, never an error for the user.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Protocol

from leadstream.server.redis_connections import REDIS_ERRORS

if TYPE_CHECKING:
    from leadstream.server.redis_connections import RedisClient

log = logging.getLogger(__name__)


def page_key(org: str, version: int, query: str) -> str:
    """The key of one list page: org, version, and a digest of the query."""
    digest = hashlib.sha1(query.encode(), usedforsecurity=False).hexdigest()[:20]
    return f"leadstream:leads:{org}:v{version}:{digest}"


class PageCache(Protocol):
    """Encoded list pages by `page_key`; a miss is None."""

    hits: int
    misses: int

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes) -> None: ...


class InProcessPageCache:
    """An LRU of encoded pages, bounded by bytes, with a TTL.

    Expired pages go when read, and all of them at most once per TTL (a
    sweep on `set`), so memory is given back after a burst. A page larger
    than an eighth of the bound is not kept: one cannot push out the rest.

    :param max_bytes: bytes of pages (and their keys) kept at most; least
        recently used go first. 0 caches nothing.
    :param ttl_s: seconds a page is kept.
    """

    def __init__(self, *, max_bytes: int = 32 * 1024 * 1024, ttl_s: float = 60) -> None:
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max_bytes = max_bytes
        self._ttl_s = ttl_s
        self._next_sweep = time.monotonic() + ttl_s
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is not None and entry[0] < time.monotonic():
            self._drop(key)
            entry = None
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[1]

    async def set(self, key: str, value: bytes) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._sweep(now)
        if key in self._entries:
            self._drop(key)
        size = _size(key, value)
        if size > self._max_bytes // 8:
            return
        self._entries[key] = (now + self._ttl_s, value)
        self.bytes += size
        while self.bytes > self._max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        _, value = self._entries.pop(key)
        self.bytes -= _size(key, value)

    def _sweep(self, now: float) -> None:
        for key in [key for key, (expires, _) in self._entries.items() if expires < now]:
            self._drop(key)
        self._next_sweep = now + self._ttl_s


def _size(key: str, value: bytes) -> int:
    """What an entry costs: its page and key, and about 200 bytes of
    bookkeeping (the dict slot, the tuple, the objects' headers)."""
    return len(value) + len(key) + 200


class RedisPageCache:
    """Pages in Redis, shared by every instance.

    :param client: a redis-py asyncio client (owned by the caller).
    :param ttl_s: seconds a page is kept.
    """

    def __init__(self, client: RedisClient, *, ttl_s: int = 60) -> None:
        self._client = client
        self._ttl_s = ttl_s
        self.hits = 0
        self.misses = 0

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self._client.get(key)
        except REDIS_ERRORS as exc:
            log.warning("page cache read failed (treated as a miss): %s", exc)
            value = None
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        return value.encode() if isinstance(value, str) else value

    async def set(self, key: str, value: bytes) -> None:
        try:
            await self._client.set(key, value, ex=self._ttl_s)
        except REDIS_ERRORS as exc:
            log.warning("page cache write failed (page not cached): %s", exc)
