"""The model client for any OpenAI-compatible Chat Completions endpoint.

`OpenAIChatModel` speaks the `ChatModel` interface with the official `openai`
SDK (`AsyncOpenAI`), so it works with OpenAI itself and with vLLM, Ollama or
llama.cpp's server given their base URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, cast

import openai
from openai.types.chat import (
    ChatCompletionChunk,
    ChatCompletionMessageParam,
    ChatCompletionToolUnionParam,
)

from leadstream.agent.model import (
    ChatMessage,
    ModelEvent,
    ModelUnavailable,
    TextDelta,
    ToolCall,
    Usage,
)
from leadstream.agent.tokens import PriceTable, TokenCounter
from leadstream.pacing import Backoff

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Statuses worth another try: timeout, conflict, rate limit (the SDK's own list), 5xx.
RETRY_STATUSES = frozenset({408, 409, 429})


class _StreamBroken(Exception):
    """The answer's stream ended or turned unreadable before the answer was complete."""


class OpenAIChatModel:
    """A `ChatModel` backed by a streaming Chat Completions endpoint.

    Each `stream()` call is one `POST /chat/completions` with the tools,
    `stream=True` and `stream_options={"include_usage": True}`. Text deltas
    are yielded as they arrive; tool calls, whose JSON arguments arrive in
    fragments spread over many chunks (keyed by `index`, several calls per
    answer possible, even interleaved), are assembled and yielded complete
    once the stream has finished; then one `Usage`, from the final chunk
    (whose `choices` is empty) or, for servers that ignore `include_usage`,
    counted locally with tiktoken.

    Reliability. Retries are written here once, with the SDK's own retries
    turned off (`max_retries=0` on the client), so one policy with one
    backoff applies: a request that fails with 408/409/429/5xx, a connection
    error or a timeout, or whose stream breaks, is tried again after an
    exponential backoff (`backoff_s * 2**n`, capped at `max_backoff_s`) with
    jitter (a random 50-100% of it, so clients that failed together do not
    retry together), or after the server's `Retry-After` when it sends one.
    A server asking for a longer wait than `max_backoff_s` is not waited for:
    the reply fails at once rather than leaving the user staring at nothing.
    Other errors (a bad key, an unknown model, a request the server rejects)
    are not retried. When the retries are exhausted, `ModelUnavailable`
    carries the last reason.

    Only a request that has not yet shown output is retried. Once text has
    been yielded it is on the user's screen (and persisted as it streams);
    a retry would produce a different answer that cannot be spliced onto
    the shown half, and restarting silently would duplicate or contradict
    it. So a stream that dies after text has been yielded raises
    `ModelUnavailable` and the loop stores the partial reply as failed.
    Tool-call fragments are not output (calls are yielded only once the
    stream is complete), so a stream that breaks while a call is being
    streamed is retried safely.

    Transport. The SDK's default HTTPX2 transport, not its aiohttp extra
    (`http_client=DefaultAioHttpClient()`, a vendored httpx-aiohttp adapter),
    although we run aiohttp anyway. Both stream and retry correctly against
    the fake server, but the adapter maps aiohttp's errors loosely onto
    HTTPX2's: a refused connection and a server that hangs up before
    answering both come out as `ConnectTimeout`, so the SDK reports "timed
    out" for what is an unreachable or crashing server, and that is the
    reason an operator would read. The default transport reports them as
    connection errors and real stalls as timeouts, before and during the
    stream. What the adapter saves is about 15% of the client's CPU per
    chunk (measured: ~88 against ~105 microseconds, 20 concurrent streams
    over loopback; most of it is the SDK's SSE and chunk parsing), which at
    a model's 50-100 chunks a second per answer is not what limits us.

    :param api_key: the API key (any non-empty text for servers without keys).
    :param base_url: the endpoint's base URL, e.g. `http://localhost:8000/v1`;
        None means OpenAI's. The environment is not consulted.
    :param model: the model name sent with each request; also `name`.
    :param timeout_s: the longest one network step may take: connecting,
        sending, or waiting for the next bytes of a stream. An answer that
        keeps streaming is never cut off.
    :param max_retries: further tries after the first one fails.
    :param backoff_s: the wait before the first retry; doubled for each next one.
    :param max_backoff_s: the longest wait before a retry.
    :param price_table: prices for `cost()`; the default OpenAI list prices if None.
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        model: str,
        timeout_s: float = 60,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8,
        price_table: PriceTable | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("api_key is empty: servers without keys accept any text")
        if max_retries < 0 or backoff_s < 0 or max_backoff_s < backoff_s or timeout_s <= 0:
            raise ValueError("retries, backoff and timeout must be non-negative and ordered")
        self.name = model
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._backoff = Backoff(
            attempts=max_retries + 1, base_delay_s=backoff_s, max_delay_s=max_backoff_s
        )
        self.price_table = price_table if price_table is not None else PriceTable()
        self._tokens = TokenCounter()
        self._client = openai.AsyncOpenAI(
            api_key=api_key, base_url=base_url or DEFAULT_BASE_URL, timeout=timeout_s, max_retries=0
        )

    async def aclose(self) -> None:
        """Close the HTTP connections (call once, when the app shuts down)."""
        await self._client.close()

    def cost(self, usage: Usage) -> float | None:
        """US dollars for `usage` at this model's price, or None when it has none."""
        return self.price_table.cost(self.name, usage.prompt_tokens, usage.completion_tokens)

    async def stream(
        self, messages: list[ChatMessage], tools: list[dict[str, Any]]
    ) -> AsyncIterator[ModelEvent]:
        """Stream one assistant step for `messages`, retrying what can safely be retried.

        :raises ModelUnavailable: retries exhausted, an error not worth
            retrying, or the stream broke after text was yielded.
        """
        failures = 0
        while True:
            answer = _Answer()
            try:
                async with contextlib.aclosing(self._attempt(messages, tools, answer)) as texts:
                    async for text in texts:
                        answer.shown = True
                        yield TextDelta(text)
            except (openai.APIError, _StreamBroken) as exc:
                reason = _reason(exc)
                if answer.shown:
                    raise ModelUnavailable(f"the answer broke off: {reason}") from exc
                if not _retryable(exc):
                    raise ModelUnavailable(reason) from exc
                failures += 1
                if failures > self.max_retries:
                    raise ModelUnavailable(f"{reason} (gave up after {failures} tries)") from exc
                delay = self._delay(failures, exc)
                if delay is None:
                    raise ModelUnavailable(f"{reason} (asked to wait too long)") from exc
                log.warning(
                    "model %s: %s; retry %d/%d in %.2fs",
                    self.name,
                    reason,
                    failures,
                    self.max_retries,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            calls = answer.tool_calls()
            for call in calls:
                yield call
            if answer.usage is None:
                answer.usage = await self._counted_usage(messages, tools, answer.text, calls)
            yield answer.usage
            return

    async def _attempt(
        self, messages: list[ChatMessage], tools: list[dict[str, Any]], answer: _Answer
    ) -> AsyncGenerator[str, None]:
        """One request: yields content as it streams, fills `answer` with the rest."""
        stream = await self._client.chat.completions.create(
            model=self.name,
            # Our messages and tool schemas are plain dicts in the API's own shapes.
            messages=cast("list[ChatCompletionMessageParam]", messages),
            tools=cast("list[ChatCompletionToolUnionParam]", tools) if tools else openai.omit,
            stream=True,
            stream_options={"include_usage": True},
        )
        async with stream:
            try:
                async for chunk in stream:
                    text = answer.add(chunk)
                    if text:
                        yield text
            except json.JSONDecodeError as exc:
                raise _StreamBroken(f"unreadable chunk from the model server: {exc}") from exc
        if answer.finish_reason is None:
            raise _StreamBroken("the stream ended before the answer was complete")
        if answer.finish_reason in ("length", "content_filter"):
            log.warning("model %s stopped early: finish_reason=%s", self.name, answer.finish_reason)

    def _delay(self, failures: int, exc: Exception) -> float | None:
        """Seconds to wait before retry number `failures`; None if the server wants too long."""
        if isinstance(exc, openai.APIStatusError):
            asked = _retry_after_s(exc.response.headers)
            if asked is not None:
                return asked if asked <= self.max_backoff_s else None
        return self._backoff.delay(failures)

    async def _counted_usage(
        self,
        messages: list[ChatMessage],
        tools: list[dict[str, Any]],
        text: str,
        calls: list[ToolCall],
    ) -> Usage:
        """Usage counted with tiktoken, for servers that do not report it."""
        named = [(call.name, call.arguments) for call in calls]

        def count() -> Usage:
            return Usage(
                prompt_tokens=self._tokens.count_messages(messages, self.name, tools),
                completion_tokens=self._tokens.count_completion(text, named, self.name),
            )

        return await asyncio.to_thread(count)


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class _Answer:
    """What one streamed answer has delivered so far."""

    shown: bool = False
    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    calls: dict[int, _PartialCall] = field(default_factory=dict)

    def add(self, chunk: ChatCompletionChunk) -> str:
        """Takes in one chunk; returns its text (empty if none)."""
        if chunk.usage is not None:
            self.usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
        text = ""
        # The usage chunk has no choices (some servers send null); we ask for one choice.
        for choice in chunk.choices or ():
            if choice.index != 0:
                continue
            delta = choice.delta
            if delta is not None:
                text += (delta.content or "") + (delta.refusal or "")
                for fragment in delta.tool_calls or ():
                    call = self.calls.setdefault(fragment.index, _PartialCall())
                    call.id = call.id or fragment.id or ""
                    if fragment.function is not None:
                        call.name += fragment.function.name or ""
                        call.arguments += fragment.function.arguments or ""
            if choice.finish_reason is not None:
                self.finish_reason = choice.finish_reason
        self.text += text
        return text

    def tool_calls(self) -> list[ToolCall]:
        """The complete calls in the model's order; ids made up where a server sent none."""
        return [
            ToolCall(
                id=call.id or f"call_{uuid.uuid4().hex[:24]}",
                name=call.name,
                arguments=call.arguments or "{}",
            )
            for _, call in sorted(self.calls.items())
        ]


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in RETRY_STATUSES or exc.status_code >= 500
    # Connection errors and timeouts (APIConnectionError), an error event in
    # the stream (plain APIError), a broken stream.
    return True


def _reason(exc: Exception) -> str:
    if isinstance(exc, openai.APITimeoutError):
        return "the model server timed out"
    if isinstance(exc, openai.APIConnectionError):
        return f"cannot reach the model server ({exc.__cause__ or exc})"
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, Mapping) else {}
        message = body.get("message") if isinstance(body.get("message"), str) else exc.message
        return f"the model server answered {exc.status_code}: {message}"
    if isinstance(exc, openai.APIError):
        return f"the model server reported an error: {exc.message}"
    return str(exc)


def _retry_after_s(headers: Mapping[str, str]) -> float | None:
    """The wait a 429/503 asks for: `retry-after-ms`, or `Retry-After` in seconds or as a date."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            if name == "retry-after":
                try:
                    return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
                except (TypeError, ValueError):
                    return None
    return None
