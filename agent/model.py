"""What the agent loop needs from a model, whichever model it is.

A `ChatModel` takes the conversation as OpenAI-style chat messages plus the
tool schemas, and streams back `TextDelta`s, complete `ToolCall`s and a final
`Usage`. The offline planner and the OpenAI-compatible client both speak it,
so the loop, the tools and the tests do not care which one answers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

ChatMessage = dict[str, Any]  # {"role": ..., "content": ..., "tool_calls"?: ..., ...}


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A complete tool call: `arguments` is the JSON text the model produced."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


ModelEvent = TextDelta | ToolCall | Usage


class ModelUnavailable(Exception):
    """The model could not answer (after retries); shown as `model_unavailable`."""


class ChatModel(Protocol):
    """A streaming chat model with tools."""

    name: str

    def stream(
        self, messages: list[ChatMessage], tools: list[dict[str, Any]]
    ) -> AsyncIterator[ModelEvent]:
        """Stream one assistant step for `messages`."""
        ...
