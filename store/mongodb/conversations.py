"""Conversations, their messages, and the result sets of searches made in them."""

from __future__ import annotations

import time
from typing import Any

from pymongo.errors import BulkWriteError, DuplicateKeyError

from leadstream.store.errors import StoreError
from leadstream.store.exchanges import new_conversation, new_exchange, new_search_set
from leadstream.store.mongodb.connection import MongoConnection, Session
from leadstream.store.mongodb.documents import (
    is_duplicate,
    message_doc,
    record_doc,
    record_from_doc,
    search_doc,
    search_from_doc,
    utc,
)
from leadstream.store.mongodb.paging import find_page, split_page
from leadstream.store.paging import KeysetPage
from leadstream.store.records import Conversation, Message, Person, SearchSet
from leadstream.store.search_quota import oldest_over_quota, search_rows


class MongoConversations(MongoConnection):
    """A user's conversations (`conversations`), their messages
    (`messages`), with idempotent sends by client message id, and stored
    search results (`searches`, expired by a TTL index and filtered on read)."""

    async def create_conversation(self, org: str, user: str, title: str) -> Conversation:
        conversation = new_conversation(org, user, title)
        await self._collection("conversations").insert_one(record_doc(conversation))
        return conversation

    async def get_conversation(self, org: str, conversation_id: str) -> Conversation | None:
        doc = await self._collection("conversations").find_one({"_id": conversation_id, "org": org})
        return record_from_doc(Conversation, doc) if doc else None

    async def list_conversations(
        self, org: str, user: str, *, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[Conversation], str | None]:
        """The user's conversations, most recently active first."""
        page = KeysetPage.of(
            "conversations", "updated_at", descending=True, limit=limit, cursor=cursor
        )
        query = {"org": org, "user": user}
        docs = await find_page(self._collection("conversations"), query, page).to_list(None)
        rows, next_cursor = split_page(page, docs)
        return [record_from_doc(Conversation, doc) for doc in rows], next_cursor

    async def start_exchange(
        self, conversation: Conversation, text: str, client_message_id: str | None
    ) -> tuple[Message, Message, bool]:
        """Store a user message and the (empty, streaming) assistant reply to it.

        Returns (user message, reply, created). With a `client_message_id`
        seen before for this user, nothing is stored and the earlier pair is
        returned with `created` false (`chat:send` is idempotent); the unique
        index on it settles two sends that race."""
        if client_message_id is not None:
            earlier = await self._exchange(conversation, client_message_id)
            if earlier is not None:
                return earlier
        user_msg, reply = new_exchange(conversation, text, client_message_id)

        async def work(session: Session) -> None:
            await self._collection("messages").insert_many(
                [message_doc(user_msg), message_doc(reply)], ordered=True, session=session
            )
            await self._collection("conversations").update_one(
                {"_id": conversation.id, "org": conversation.org},
                {"$set": {"updated_at": user_msg.created_at}},
                session=session,
            )

        try:
            await self._atomically(work)
        except (DuplicateKeyError, BulkWriteError) as error:
            if client_message_id is None or not is_duplicate(error):
                raise
            earlier = await self._exchange(conversation, client_message_id)
            if earlier is None:
                raise
            return earlier
        return user_msg, reply, True

    async def _exchange(
        self, conversation: Conversation, client_message_id: str
    ) -> tuple[Message, Message, bool] | None:
        messages = self._collection("messages")
        doc = await messages.find_one(
            {
                "org": conversation.org,
                "user": conversation.user,
                "client_message_id": client_message_id,
            }
        )
        if doc is None:
            return None
        reply = await messages.find_one({"_id": doc["reply_id"], "org": conversation.org})
        if reply is None:
            raise StoreError(f"message {doc['_id']} has no reply {doc['reply_id']}")
        return record_from_doc(Message, doc), record_from_doc(Message, reply), False

    async def find_exchange(
        self, org: str, user: str, client_message_id: str
    ) -> tuple[str, str] | None:
        """(conversation id, reply id) of the user's message sent with
        `client_message_id`, if there is one."""
        doc = await self._collection("messages").find_one(
            {"org": org, "user": user, "client_message_id": client_message_id},
            {"conversation_id": 1, "reply_id": 1},
        )
        return (doc["conversation_id"], doc["reply_id"]) if doc else None

    async def interrupt_stale_replies(self, *, started_before: str) -> int:
        result = await self._collection("messages").update_many(
            {"role": "assistant", "status": "streaming", "created_at": {"$lt": started_before}},
            {"$set": {"status": "interrupted"}},
        )
        return result.modified_count

    async def save_reply(
        self,
        message_id: str,
        *,
        text: str,
        tool_calls: list[dict[str, Any]],
        status: str,
        usage: dict[str, Any] | None = None,
    ) -> None:
        await self._collection("messages").update_one(
            {"_id": message_id},
            {"$set": {"text": text, "tool_calls": tool_calls, "status": status, "usage": usage}},
        )

    async def get_message(self, org: str, message_id: str) -> Message | None:
        doc = await self._collection("messages").find_one({"_id": message_id, "org": org})
        return record_from_doc(Message, doc) if doc else None

    async def list_messages(
        self, org: str, conversation_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[Message], str | None]:
        """Messages oldest first."""
        page = KeysetPage.of("messages", "created_at", descending=False, limit=limit, cursor=cursor)
        query = {"org": org, "conversation_id": conversation_id}
        docs = await find_page(self._collection("messages"), query, page).to_list(None)
        rows, next_cursor = split_page(page, docs)
        return [record_from_doc(Message, doc) for doc in rows], next_cursor

    async def recent_messages(self, org: str, conversation_id: str, limit: int) -> list[Message]:
        """The last `limit` messages of a conversation, oldest first (history for the model)."""
        if limit <= 0:
            return []
        docs = (
            await self._collection("messages")
            .find({"org": org, "conversation_id": conversation_id})
            .sort([("created_at", -1), ("_id", -1)])
            .limit(limit)
            .to_list(None)
        )
        return [record_from_doc(Message, doc) for doc in reversed(docs)]

    async def save_search(
        self,
        org: str,
        user: str,
        conversation_id: str | None,
        query: dict[str, Any],
        people: list[Person],
        *,
        search_id: str | None = None,
    ) -> SearchSet:
        search = new_search_set(org, user, conversation_id, query, people, search_id=search_id)
        rows = search_rows(people)
        searches = self._collection("searches")
        stored = (
            await searches.find(
                {"org": org, "expires_at": {"$gte": utc(time.time())}}, {"row_count": 1}
            )
            .sort([("created_at", 1), ("_id", 1)])
            .to_list(None)
        )
        dropped = oldest_over_quota(
            ((doc["_id"], doc.get("row_count", 0)) for doc in stored), rows, self.search_rows_quota
        )
        if dropped:
            await searches.delete_many({"_id": {"$in": dropped}})
        expires_at = utc(time.time() + self.search_ttl_s)
        await searches.insert_one(search_doc(search, expires_at, rows))
        return search

    async def get_search(self, org: str, search_id: str) -> SearchSet | None:
        doc = await self._collection("searches").find_one(
            {"_id": search_id, "org": org, "expires_at": {"$gte": utc(time.time())}}
        )
        return search_from_doc(doc) if doc else None
