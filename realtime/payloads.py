"""Payload models of the client -> server events (PROTOCOL.md).

Unknown fields are ignored, as a forward-compatible client may send more.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictInt


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ChatSend(_Payload):
    conversationId: str | None = Field(None, max_length=100)
    text: str
    clientMessageId: str | None = Field(None, min_length=1, max_length=100)


class ChatStop(_Payload):
    conversationId: str = Field(..., max_length=100)


class ChatResume(_Payload):
    conversationId: str = Field(..., max_length=100)
    messageId: str = Field(..., max_length=100)
    offset: StrictInt = Field(0, ge=0)


class LeadsSubscribe(_Payload):
    since: StrictInt | None = Field(None, ge=0)
