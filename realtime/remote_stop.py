"""One running reply per conversation across instances, and `chat:stop` for
a reply running on another instance, through Redis.

The instance about to run a reply claims the conversation
(`leadstream:reply:{conversationId}` -> its instance id, SET NX with a TTL it
refreshes); a `chat:send` on any instance finds the claim taken and answers
`conversation_busy`. A `chat:stop` that lands on an instance without that
reply publishes the conversation id on a channel every instance listens to;
the owner cancels the reply, and its `chat:done {stopped: true}` reaches the
user through the Socket.IO manager.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable

from leadstream.realtime.subscriptions import RECONNECT
from leadstream.server.redis_connections import REDIS_ERRORS, RedisClient

log = logging.getLogger(__name__)

CHANNEL = "leadstream:stop"
# Deletes the claim only if this instance still holds it.
RELEASE_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class RemoteStop:
    """Cross-instance stop requests.

    :param client: a redis-py asyncio client (owned by the caller).
    :param on_stop: called with a conversation id when a stop arrives; returns
        whether a reply was running here.
    :param ttl_s: how long a running reply's record lives without a refresh.
    """

    def __init__(
        self, client: RedisClient, on_stop: Callable[[str], Awaitable[bool]], *, ttl_s: int = 120
    ) -> None:
        self._client = client
        self._on_stop = on_stop
        self._ttl_s = ttl_s
        self.instance_id = secrets.token_hex(8)
        self._listener: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._listener = asyncio.create_task(self._listen(), name="remote-stop-listener")

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)

    async def claim(self, conversation_id: str) -> bool:
        """Record that this instance runs the conversation's reply; False when
        a reply of it already runs (here or on another instance). Without
        Redis it answers True: replies then run, and stop, per instance."""
        try:
            claimed = await self._client.set(
                _key(conversation_id), self.instance_id, ex=self._ttl_s, nx=True
            )
        except REDIS_ERRORS as exc:
            log.warning("could not record a running reply (stop works locally only): %s", exc)
            return True
        return bool(claimed)

    async def refresh(self, conversation_id: str) -> None:
        """Extend this instance's claim (taken again should it have vanished)."""
        key = _key(conversation_id)
        try:
            if not await self._client.expire(key, self._ttl_s):
                await self._client.set(key, self.instance_id, ex=self._ttl_s, nx=True)
        except REDIS_ERRORS as exc:
            log.warning("could not refresh a running reply record: %s", exc)

    async def release(self, conversation_id: str) -> None:
        """Drop this instance's claim (another instance's is left alone)."""
        try:
            await self._client.eval(RELEASE_SCRIPT, 1, _key(conversation_id), self.instance_id)
        except REDIS_ERRORS as exc:
            log.warning("could not clear a running reply record (it expires): %s", exc)

    async def request_stop(self, conversation_id: str) -> bool:
        """Ask the instance running the reply to stop it; False if none runs it."""
        try:
            if await self._client.get(_key(conversation_id)) is None:
                return False
            await self._client.publish(CHANNEL, conversation_id)
        except REDIS_ERRORS as exc:
            log.warning("could not relay chat:stop: %s", exc)
            return False
        return True

    async def _listen(self) -> None:
        failures = 0
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                failures = 0
                async for message in pubsub.listen():
                    conversation_id = message["data"].decode()
                    await self._on_stop(conversation_id)
            except REDIS_ERRORS as exc:
                failures += 1
                delay = RECONNECT.delay(failures)
                log.warning("stop channel lost (retrying in %.1fs): %s", delay, exc)
                await asyncio.sleep(delay)
            finally:
                await pubsub.aclose()


def _key(conversation_id: str) -> str:
    return f"leadstream:reply:{conversation_id}"
