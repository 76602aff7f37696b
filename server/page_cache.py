"""A cache of `GET /api/leads` pages.

Keys carry the org's current change-log version, so any change of an org
makes its old pages unreachable at once (they age out by TTL), other orgs'
pages stay, and nothing ever needs a pattern delete. In-process by default,
Redis (shared by every instance) when `REDIS_URL` is set; a Redis failure is
a miss, logged, never an error for the user.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


def page_key(org: str, version: int, query: str) -> str:
    """The key of one list page: org, version, and a digest of the query."""
    digest = hashlib.sha1(query.encode(), usedforsecurity=False).hexdigest()[:20]
    return f"leadstream:leads:{org}:v{version}:{digest}"


class PageCache(Protocol):
    hits: int
    misses: int

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes) -> None: ...


class InProcessPageCache:
    """An LRU of encoded pages with a TTL.

    :param max_entries: pages kept at most (least recently used go first).
    :param ttl_s: seconds a page is kept.
    """

    def __init__(self, *, max_entries: int = 2048, ttl_s: float = 60) -> None:
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max_entries = max_entries
        self._ttl_s = ttl_s
        self.hits = 0
        self.misses = 0

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[1]

    async def set(self, key: str, value: bytes) -> None:
        self._entries[key] = (time.monotonic() + self._ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)


class RedisPageCache:
    """Pages in Redis, shared by every instance.

    :param client: a redis-py asyncio client (owned by the caller).
    :param ttl_s: seconds a page is kept.
    """

    def __init__(self, client: aioredis.Redis, *, ttl_s: int = 60) -> None:
        self._client = client
        self._ttl_s = ttl_s
        self.hits = 0
        self.misses = 0

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self._client.get(key)
        except RedisError as exc:
            log.warning("page cache read failed (treated as a miss): %s", exc)
            value = None
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        return bytes(value)

    async def set(self, key: str, value: bytes) -> None:
        try:
            await self._client.set(key, value, ex=self._ttl_s)
        except RedisError as exc:
            log.warning("page cache write failed (page not cached): %s", exc)
