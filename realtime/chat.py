"""Chat over Socket.IO: `chat:send`, `chat:stop`, `chat:resume`, and the events
of a running reply (`chat:delta`, `chat:tool`, `leads:batch`, `chat:done`,
`chat:error`), all addressed to the conversation owner's connections.

A reply runs as a task owned by `ChatService`, one at a time per
conversation, and at most `replies_per_user` per user and `replies_per_org`
per org at once on this instance (`ReplySlots`; beyond them `chat:send`
acks `too_many_replies` and nothing is stored); `chat:stop` cancels it.
Text deltas are coalesced by time and size (`SocketTurnEvents`) so a fast
model does not become thousands of tiny packets; every other event first
flushes pending text, so order is kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import socketio

from leadstream.agent.loop import AgentLoop
from leadstream.agent.providers.base import LeadProvider
from leadstream.agent.tools import ExportRequest, ToolContext
from leadstream.realtime.acks import EventError, EventGate, acknowledged
from leadstream.realtime.emitter import Emitter
from leadstream.realtime.payloads import ChatResume, ChatSend, ChatStop
from leadstream.realtime.remote_stop import RemoteStop
from leadstream.store.base import Store
from leadstream.store.records import Conversation

log = logging.getLogger(__name__)
CLAIM_REFRESH_S = 30


class SocketTurnEvents:
    """`TurnEvents` of one reply, emitted to the owner's connections.

    :param flush_s: longest time text waits before it is emitted.
    :param flush_chars: pending text at which it is emitted at once.
    """

    def __init__(
        self,
        emitter: Emitter,
        conversation: Conversation,
        message_id: str,
        *,
        flush_s: float,
        flush_chars: int,
    ) -> None:
        self._emitter = emitter
        self._org = conversation.org
        self._user = conversation.user
        self._conversation_id = conversation.id
        self._message_id = message_id
        self._flush_s = flush_s
        self._flush_chars = flush_chars
        self.text_so_far = ""  # what `chat:resume` answers from while running
        self._emitted = 0  # chars of text_so_far already emitted
        self._lock = asyncio.Lock()  # one emit at a time keeps events in order
        self._timer: asyncio.Task[None] | None = None

    async def text(self, piece: str) -> None:
        self.text_so_far += piece
        if len(self.text_so_far) - self._emitted >= self._flush_chars:
            await self._flush()
        elif self._timer is None:
            self._timer = asyncio.create_task(self._flush_later())

    async def tool(
        self,
        call_id: str,
        name: str,
        args: dict[str, Any],
        status: str,
        *,
        summary: str | None = None,
        progress: dict[str, int | None] | None = None,
        error: dict[str, str] | None = None,
        result: dict[str, Any] | None = None,
    ) -> None:
        payload = self._base() | {"callId": call_id, "name": name, "args": args, "status": status}
        if result is not None:
            payload["result"] = result
        if summary is not None:
            payload["summary"] = summary
        if progress is not None:
            payload["progress"] = progress
        if error is not None:
            payload["error"] = error
        await self._send("chat:tool", payload)

    async def batch(
        self,
        call_id: str,
        search_id: str,
        leads: list[dict[str, Any]],
        seq: int,
        *,
        done: bool,
        total: int | None = None,
    ) -> None:
        payload: dict[str, Any] = {
            "conversationId": self._conversation_id,
            "callId": call_id,
            "searchId": search_id,
            "leads": leads,
            "seq": seq,
            "done": done,
        }
        if total is not None:
            payload["total"] = total
        await self._send("leads:batch", payload)

    async def done(self, *, stopped: bool, usage: dict[str, Any]) -> None:
        await self._send("chat:done", self._base() | {"stopped": stopped, "usage": usage})

    async def error(self, code: str, message: str) -> None:
        payload = self._base() | {"error": {"code": code, "message": message}}
        await self._send("chat:error", payload)

    def _base(self) -> dict[str, Any]:
        return {"conversationId": self._conversation_id, "messageId": self._message_id}

    async def _send(self, event: str, payload: dict[str, Any]) -> None:
        await self._flush()
        async with self._lock:
            await self._emitter.to_user(self._org, self._user, event, payload)

    async def _flush_later(self) -> None:
        await asyncio.sleep(self._flush_s)
        self._timer = None
        await self._flush()

    async def _flush(self) -> None:
        if self._timer is not None and self._timer is not asyncio.current_task():
            self._timer.cancel()
            self._timer = None
        async with self._lock:
            pending = self.text_so_far[self._emitted :]
            if not pending:
                return
            offset = self._emitted
            self._emitted = len(self.text_so_far)
            payload = self._base() | {"text": pending, "offset": offset}
            await self._emitter.to_user(self._org, self._user, "chat:delta", payload)


class ReplySlots:
    """Replies running at once on this instance, per user and per org.

    Counted per instance, as connections per user are: N instances behind a
    balancer let a user run N times `per_user` (the daily budget, kept in the
    store, still bounds what they spend together).

    :param per_user: replies one user may have running.
    :param per_org: replies one org may have running.
    """

    def __init__(self, *, per_user: int, per_org: int) -> None:
        self._per_user = per_user
        self._per_org = per_org
        self._users: dict[tuple[str, str], int] = {}
        self._orgs: dict[str, int] = {}

    def take(self, org: str, user: str) -> None:
        """Claim a slot for a reply (no await: check and claim are one step).

        :raises EventError: `too_many_replies` when the user or the org is at its limit.
        """
        if self._users.get((org, user), 0) >= self._per_user:
            raise EventError(
                "too_many_replies",
                f"you already have {self._per_user} replies running; "
                "wait for one to finish or stop it",
            )
        if self._orgs.get(org, 0) >= self._per_org:
            raise EventError(
                "too_many_replies",
                f"your organisation already has {self._per_org} replies running; try again shortly",
            )
        self._users[(org, user)] = self._users.get((org, user), 0) + 1
        self._orgs[org] = self._orgs.get(org, 0) + 1

    def give_back(self, org: str, user: str) -> None:
        """Free a slot of `take` (the reply ended, or never started)."""
        self._users[(org, user)] -= 1
        if not self._users[(org, user)]:
            del self._users[(org, user)]
        self._orgs[org] -= 1
        if not self._orgs[org]:
            del self._orgs[org]


@dataclass
class RunningReply:
    message_id: str
    task: asyncio.Task[Any]
    events: SocketTurnEvents


class ChatService:
    """Starts, tracks and stops assistant replies on this instance.

    :param start_export: schedules an export job and returns its id.
    :param replies_per_user: replies one user may have running at once here.
    :param replies_per_org: replies one org may have running at once here.
    :param daily_credits: paid lookups per org per UTC day (None: no cap).
    """

    def __init__(
        self,
        *,
        store: Store,
        loop: AgentLoop,
        provider: LeadProvider,
        emitter: Emitter,
        start_export: Callable[[ExportRequest], Awaitable[str]],
        max_text: int,
        search_default: int,
        search_max: int,
        flush_s: float,
        flush_chars: int,
        history_limit: int = 40,
        replies_per_user: int = 2,
        replies_per_org: int = 10,
        daily_credits: int | None = None,
    ) -> None:
        self._store = store
        self._loop = loop
        self._provider = provider
        self._emitter = emitter
        self._start_export = start_export
        self._max_text = max_text
        self._search_default = search_default
        self._search_max = search_max
        self._flush_s = flush_s
        self._flush_chars = flush_chars
        self._history_limit = history_limit
        self._slots = ReplySlots(per_user=replies_per_user, per_org=replies_per_org)
        self._daily_credits = daily_credits
        self._running: dict[str, RunningReply] = {}
        self._remote: RemoteStop | None = None

    def use_remote_stop(self, remote: RemoteStop) -> None:
        """Relay `chat:stop` to other instances (with Redis)."""
        self._remote = remote

    async def stop_here(self, conversation_id: str) -> bool:
        """Stop the conversation's reply if it runs on this instance."""
        running = self._running.get(conversation_id)
        if running is None:
            return False
        running.task.cancel()
        await asyncio.gather(running.task, return_exceptions=True)
        return True

    async def send(self, org: str, user: str, payload: ChatSend) -> dict[str, Any]:
        text = payload.text
        if not text.strip():
            raise EventError("text_empty", "text must not be blank")
        if len(text) > self._max_text:
            raise EventError("text_too_long", f"text is longer than {self._max_text} characters")
        if payload.clientMessageId:  # a retry gets the ids of the first send
            earlier = await self._store.find_exchange(org, user, payload.clientMessageId)
            if earlier is not None:
                return {"ok": True, "conversationId": earlier[0], "messageId": earlier[1]}
        self._slots.take(org, user)  # before anything is stored
        started = claimed = False
        try:
            if payload.conversationId:
                conversation = await self._owned_conversation(org, user, payload.conversationId)
            else:
                conversation = await self._store.create_conversation(org, user, _title(text))
            if conversation.id in self._running:
                raise EventError(
                    "conversation_busy", "a reply is still being generated; stop it first"
                )
            if self._remote is not None:  # one reply per conversation on all instances
                claimed = await self._remote.claim(conversation.id)
                if not claimed:
                    raise EventError(
                        "conversation_busy", "a reply is still being generated; stop it first"
                    )
            _, reply, created = await self._store.start_exchange(
                conversation, text, payload.clientMessageId
            )
            if created:
                if conversation.id in self._running:  # another send won the race
                    await self._store.save_reply(reply.id, text="", tool_calls=[], status="failed")
                    raise EventError("conversation_busy", "a reply is still being generated")
                self._start(conversation, reply.id)
                started = True
        finally:
            if not started:  # the slot (and claim) go with the reply task otherwise
                self._slots.give_back(org, user)
                if claimed and self._remote is not None:
                    await self._remote.release(conversation.id)
        return {"ok": True, "conversationId": reply.conversation_id, "messageId": reply.id}

    async def stop(self, org: str, user: str, payload: ChatStop) -> dict[str, Any]:
        await self._owned_conversation(org, user, payload.conversationId)
        stopped = await self.stop_here(payload.conversationId)
        if not stopped and self._remote is not None:
            stopped = await self._remote.request_stop(payload.conversationId)
        return {"ok": True, "stopped": stopped}

    async def resume(self, org: str, user: str, payload: ChatResume) -> dict[str, Any]:
        await self._owned_conversation(org, user, payload.conversationId)
        running = self._running.get(payload.conversationId)
        if running is not None and running.message_id == payload.messageId:
            return {"ok": True, "text": running.events.text_so_far[payload.offset :], "done": False}
        message = await self._store.get_message(org, payload.messageId)
        if message is None or message.conversation_id != payload.conversationId:
            raise EventError("not_found", "no such message in this conversation")
        done = message.status != "streaming"
        return {"ok": True, "text": message.text[payload.offset :], "done": done}

    async def close(self) -> None:
        """Stop every running reply (each is stored as stopped)."""
        tasks = [running.task for running in self._running.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _owned_conversation(self, org: str, user: str, conversation_id: str) -> Conversation:
        conversation = await self._store.get_conversation(org, conversation_id)
        if conversation is None or conversation.user != user:
            raise EventError("not_found", "no such conversation")
        return conversation

    def _start(self, conversation: Conversation, reply_id: str) -> None:
        events = SocketTurnEvents(
            self._emitter,
            conversation,
            reply_id,
            flush_s=self._flush_s,
            flush_chars=self._flush_chars,
        )
        ctx = ToolContext(
            org=conversation.org,
            user=conversation.user,
            conversation_id=conversation.id,
            store=self._store,
            provider=self._provider,
            events=events,
            start_export=self._start_export,
            search_default=self._search_default,
            search_max=self._search_max,
            daily_credits=self._daily_credits,
        )
        task = asyncio.create_task(self._run(ctx, reply_id), name=f"reply-{reply_id}")
        self._running[conversation.id] = RunningReply(reply_id, task, events)

    async def _run(self, ctx: ToolContext, reply_id: str) -> None:
        started = time.perf_counter()
        claim = None
        if self._remote is not None:
            claim = asyncio.create_task(self._keep_claim(ctx.conversation_id))
        try:
            history = await self._store.recent_messages(
                ctx.org, ctx.conversation_id, self._history_limit
            )
            history = [m for m in history if m.id != reply_id]
            await self._loop.run(ctx, history, reply_id)
        except asyncio.CancelledError:
            log.info("reply %s stopped", reply_id)
        except Exception:
            # The loop stores and reports its own failures; this is a bug or
            # a store failure outside it. Logged, and the user is told.
            log.exception("reply %s failed", reply_id)
            await ctx.events.error("internal_error", "The reply failed; please try again.")
        finally:
            self._running.pop(ctx.conversation_id, None)
            self._slots.give_back(ctx.org, ctx.user)
            if claim is not None and self._remote is not None:
                claim.cancel()
                await self._remote.release(ctx.conversation_id)
            log.debug("reply %s took %.3fs", reply_id, time.perf_counter() - started)

    async def _keep_claim(self, conversation_id: str) -> None:
        assert self._remote is not None
        while True:  # claimed by `send`
            await asyncio.sleep(CLAIM_REFRESH_S)
            await self._remote.refresh(conversation_id)


def _title(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 80 else line[:79] + "…"


def register_chat_events(sio: socketio.AsyncServer, chat: ChatService, gate: EventGate) -> None:
    async def on_send(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        session = await sio.get_session(sid)
        return await chat.send(session["org"], session["user"], ChatSend.model_validate(data))

    async def on_stop(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        session = await sio.get_session(sid)
        return await chat.stop(session["org"], session["user"], ChatStop.model_validate(data))

    async def on_resume(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        session = await sio.get_session(sid)
        return await chat.resume(session["org"], session["user"], ChatResume.model_validate(data))

    sio.on("chat:send", acknowledged("chat:send", on_send, gate))
    sio.on("chat:stop", acknowledged("chat:stop", on_stop, gate))
    sio.on("chat:resume", acknowledged("chat:resume", on_resume, gate))
