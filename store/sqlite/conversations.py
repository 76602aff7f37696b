"""Conversations, messages and search result sets on SQLite
(`base.ConversationStore`)."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import orjson

from leadstream.store.exchanges import new_conversation, new_exchange, new_search_set
from leadstream.store.paging import KeysetPage
from leadstream.store.records import Conversation, Message, Person, SearchSet
from leadstream.store.search_quota import oldest_over_quota, search_rows
from leadstream.store.sqlite.database import SqliteDatabase
from leadstream.store.sqlite.rows import MESSAGE_COLUMNS, json_text, message_from_row, message_row

CONVERSATION_COLUMNS = "id, org, user_id, title, created_at, updated_at"


class SqliteConversations:
    """The conversation part of `SqliteStore` (a mixin: it uses the store's
    `database`, `search_ttl_s` and `search_rows_quota`)."""

    database: SqliteDatabase
    search_ttl_s: int
    search_rows_quota: int

    async def create_conversation(self, org: str, user: str, title: str) -> Conversation:
        conv = new_conversation(org, user, title)
        await self.database.write(
            lambda db: db.execute(
                f"INSERT INTO conversations ({CONVERSATION_COLUMNS}) VALUES (?,?,?,?,?,?)",
                (conv.id, org, user, conv.title, conv.created_at, conv.updated_at),
            )
        )
        return conv

    async def get_conversation(self, org: str, conversation_id: str) -> Conversation | None:
        row = await self.database.read(
            lambda db: db.execute(
                f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE org = ? AND id = ?",
                (org, conversation_id),
            ).fetchone()
        )
        return Conversation(*row) if row else None

    async def list_conversations(
        self, org: str, user: str, *, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[Conversation], str | None]:
        """The user's conversations, last updated first."""
        page = KeysetPage.of(
            "conversations", "updated_at", descending=True, limit=limit, cursor=cursor
        )
        where, params = "org = ? AND user_id = ?", [org, user]
        if page.after is not None:
            where += " AND (updated_at, id) < (?, ?)"
            params += list(page.after)
        sql = (
            f"SELECT {CONVERSATION_COLUMNS} FROM conversations "
            f"WHERE {where} ORDER BY updated_at DESC, id DESC LIMIT ?"
        )
        rows = await self.database.read(
            lambda db: db.execute(sql, [*params, page.rows_to_read]).fetchall()
        )
        return page.split([Conversation(*row) for row in rows], lambda c: (c.updated_at, c.id))

    async def start_exchange(
        self, conversation: Conversation, text: str, client_message_id: str | None
    ) -> tuple[Message, Message, bool]:
        """Store a user message and the (empty, streaming) assistant reply to it.

        Returns (user message, reply, created). With a `client_message_id`
        seen before for this user, nothing is stored and the earlier pair is
        returned with `created` false (`chat:send` is idempotent)."""
        user_message, reply = new_exchange(conversation, text, client_message_id)

        def run(db: sqlite3.Connection) -> tuple[Message, Message, bool]:
            if client_message_id is not None:
                row = db.execute(
                    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE org = ? AND user_id = ? "
                    "AND client_message_id = ?",
                    (conversation.org, conversation.user, client_message_id),
                ).fetchone()
                if row is not None:
                    earlier = message_from_row(row)
                    reply_row = db.execute(
                        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?", (earlier.reply_id,)
                    ).fetchone()
                    return earlier, message_from_row(reply_row), False
            db.executemany(
                f"INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [message_row(user_message), message_row(reply)],
            )
            db.execute(
                "UPDATE conversations SET updated_at = ? WHERE id = ?",
                (user_message.created_at, conversation.id),
            )
            return user_message, reply, True

        return await self.database.write(run)

    async def find_exchange(
        self, org: str, user: str, client_message_id: str
    ) -> tuple[str, str] | None:
        """(conversation id, reply id) of the user's message sent with
        `client_message_id`, if there is one."""
        row = await self.database.read(
            lambda db: db.execute(
                "SELECT conversation_id, reply_id FROM messages WHERE org = ? AND user_id = ? "
                "AND client_message_id = ?",
                (org, user, client_message_id),
            ).fetchone()
        )
        return (row[0], row[1]) if row else None

    async def interrupt_stale_replies(self, *, started_before: str) -> int:
        """Mark replies still `streaming` that started before the given time
        (ISO-8601) as `interrupted`: their process is gone."""
        return await self.database.write(
            lambda db: (
                db.execute(
                    "UPDATE messages SET status = 'interrupted' WHERE role = 'assistant' "
                    "AND status = 'streaming' AND created_at < ?",
                    (started_before,),
                ).rowcount
            )
        )

    async def save_reply(
        self,
        message_id: str,
        *,
        text: str,
        tool_calls: list[dict[str, Any]],
        status: str,
        usage: dict[str, Any] | None = None,
    ) -> None:
        await self.database.write(
            lambda db: db.execute(
                "UPDATE messages SET text = ?, tool_calls = ?, status = ?, usage = ? WHERE id = ?",
                (
                    text,
                    json_text(tool_calls),
                    status,
                    json_text(usage) if usage else None,
                    message_id,
                ),
            )
        )

    async def get_message(self, org: str, message_id: str) -> Message | None:
        row = await self.database.read(
            lambda db: db.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE org = ? AND id = ?",
                (org, message_id),
            ).fetchone()
        )
        return message_from_row(row) if row else None

    async def list_messages(
        self, org: str, conversation_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[Message], str | None]:
        """Messages oldest first."""
        page = KeysetPage.of("messages", "created_at", descending=False, limit=limit, cursor=cursor)
        where, params = "org = ? AND conversation_id = ?", [org, conversation_id]
        if page.after is not None:
            where += " AND (created_at, id) > (?, ?)"
            params += list(page.after)
        sql = (
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE {where} ORDER BY created_at, id LIMIT ?"
        )
        rows = await self.database.read(
            lambda db: db.execute(sql, [*params, page.rows_to_read]).fetchall()
        )
        return page.split([message_from_row(row) for row in rows], lambda m: (m.created_at, m.id))

    async def recent_messages(self, org: str, conversation_id: str, limit: int) -> list[Message]:
        """The last `limit` messages of a conversation, oldest first (history for the model)."""
        rows = await self.database.read(
            lambda db: db.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE org = ? AND conversation_id = ? "
                "ORDER BY created_at DESC, id DESC LIMIT ?",
                (org, conversation_id, limit),
            ).fetchall()
        )
        return [message_from_row(row) for row in reversed(rows)]

    # -- search result sets ----------------------------------------------------

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
        expires = time.time() + self.search_ttl_s
        payload = json_text([p.to_wire() for p in people])
        rows = search_rows(people)

        def run(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM searches WHERE expires_epoch < ?", (time.time(),))
            stored = db.execute(
                "SELECT id, row_count FROM searches WHERE org = ? ORDER BY created_at, rowid",
                (org,),
            ).fetchall()
            dropped = oldest_over_quota(stored, rows, self.search_rows_quota)
            db.executemany("DELETE FROM searches WHERE id = ?", [(i,) for i in dropped])
            db.execute(
                "INSERT INTO searches (id, org, user_id, conversation_id, query, people, "
                "created_at, expires_epoch, row_count) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    search.id,
                    org,
                    user,
                    conversation_id,
                    json_text(query),
                    payload,
                    search.created_at,
                    expires,
                    rows,
                ),
            )

        await self.database.write(run)
        return search

    async def get_search(self, org: str, search_id: str) -> SearchSet | None:
        row = await self.database.read(
            lambda db: db.execute(
                "SELECT id, org, user_id, conversation_id, query, people, created_at FROM searches "
                "WHERE org = ? AND id = ? AND expires_epoch >= ?",
                (org, search_id, time.time()),
            ).fetchone()
        )
        if row is None:
            return None
        people = [Person.from_wire(p) for p in orjson.loads(row[5])]
        return SearchSet(row[0], row[1], row[2], row[3], orjson.loads(row[4]), people, row[6])
