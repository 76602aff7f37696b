"""What a conversation stores, built once for every backend: the
conversation itself, each exchange, and the result sets of its searches.

A send (`chat:send`) stores an exchange: the user's message and the empty
assistant reply that streams into it, linked by `reply_id`. A search stores
what it found, for later turns and exports to refer to by id. Backends only
write these records (and find an earlier exchange by `client_message_id`).
"""

from __future__ import annotations

from typing import Any

from leadstream.store.records import Conversation, Message, Person, SearchSet, iso_now, new_id

# Longer titles are cut: a title names a conversation in a list.
MAX_TITLE_CHARS = 120


def new_conversation(org: str, user: str, title: str) -> Conversation:
    """A new conversation of `user` (its title cut to `MAX_TITLE_CHARS`)."""
    now = iso_now()
    return Conversation(new_id("cv"), org, user, title[:MAX_TITLE_CHARS], now, now)


def new_exchange(
    conversation: Conversation, text: str, client_message_id: str | None
) -> tuple[Message, Message]:
    """(user message, reply): the message sent with `text` and the empty
    assistant reply to it (`streaming`), made at the same time."""
    now = iso_now()
    # The user's message first: messages list by (created_at, id), ids by creation.
    user_id, reply_id = new_id("mg"), new_id("mg")
    user_message = Message(
        user_id,
        conversation.id,
        conversation.org,
        conversation.user,
        "user",
        text,
        client_message_id=client_message_id,
        reply_id=reply_id,
        created_at=now,
    )
    reply = Message(
        reply_id,
        conversation.id,
        conversation.org,
        conversation.user,
        "assistant",
        "",
        status="streaming",
        created_at=now,
    )
    return user_message, reply


def new_search_set(
    org: str,
    user: str,
    conversation_id: str | None,
    query: dict[str, Any],
    people: list[Person],
    *,
    search_id: str | None = None,
) -> SearchSet:
    """The result set of a search `user` made (in a conversation, or not),
    under `search_id` when the search announced one already."""
    return SearchSet(
        search_id or new_id("sr"), org, user, conversation_id, query, people, iso_now()
    )
