"""A local stand-in for OpenAI's Chat Completions API, for tests and benchmarks.

`FakeOpenAI` is a small aiohttp server on 127.0.0.1 that speaks the documented
wire format, so the real `openai` SDK runs against it over a real socket:
`POST /v1/chat/completions` answered either as one `chat.completion` object
or, with `"stream": true`, as server-sent events, one
`data: {"object": "chat.completion.chunk", ...}` per chunk, then
`data: [DONE]`. With `stream_options.include_usage` every chunk carries
`"usage": null` and a last chunk with empty `choices` carries the usage.

What it answers is scripted: the test queues replies (`TextReply`,
`ToolCallReply`, `ErrorReply`, `DyingReply`, `StallingReply`) and each
request takes the next one; when the queue is empty a `responder` function,
if given, decides, and otherwise the request gets a 400 saying the script
ran out. Every request body is recorded in `requests`, and the usage of
every completed answer in `usages`, counted with `leadstream.agent.tokens`
as the server sees the request (messages and tool definitions), so
benchmarks can report what a conversation costs. Clients that hung up
mid-stream are counted in `disconnects`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from leadstream.agent.model import Usage
from leadstream.agent.tokens import TokenCounter


@dataclass(frozen=True)
class FakeToolCall:
    """One tool call the fake model makes; `arguments` a dict (sent as JSON) or raw text."""

    name: str
    arguments: Mapping[str, Any] | str
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")

    @property
    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return orjson.dumps(dict(self.arguments)).decode()


@dataclass(frozen=True)
class TextReply:
    """A plain answer, streamed as `pieces` content chunks."""

    text: str
    pieces: int = 4


@dataclass(frozen=True)
class ToolCallReply:
    """One or more tool calls, each one's arguments streamed in `fragments` pieces.

    OpenAI streams parallel calls one after the other; `interleave` sends
    their fragments alternately instead, as some compatible servers do.
    `text` is content streamed before the calls.
    """

    calls: Sequence[FakeToolCall]
    fragments: int = 8
    interleave: bool = False
    text: str = ""


@dataclass(frozen=True)
class ErrorReply:
    """An HTTP error with OpenAI's error body, and a `Retry-After` header if given."""

    status: int
    message: str = "The fake server was told to fail this request."
    retry_after: float | None = None


@dataclass(frozen=True)
class DyingReply:
    """Starts streaming `reply`, then drops the connection after `after_chunks` chunks."""

    reply: TextReply | ToolCallReply
    after_chunks: int


@dataclass(frozen=True)
class StallingReply:
    """Sends `after_chunks` chunks of `reply` (0: not even the headers), goes silent
    for `stall_s`, then carries on: a slow or hung server, for client timeouts."""

    reply: TextReply | ToolCallReply
    after_chunks: int
    stall_s: float


Reply = TextReply | ToolCallReply | ErrorReply | DyingReply | StallingReply
Responder = Callable[[dict[str, Any]], Reply]


class FakeOpenAI:
    """A scripted OpenAI-compatible Chat Completions server on a free local port.

    :param api_key: when set, requests without `Authorization: Bearer <api_key>`
        get OpenAI's 401 `invalid_api_key` error.
    :param responder: decides the reply once the scripted queue is empty (for
        conversations whose length a test does not fix, like benchmarks).
    :param chunk_delay_s: pause between streamed chunks, to imitate a model's pace.
    :param report_usage: False imitates servers that ignore `stream_options.include_usage`.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        responder: Responder | None = None,
        chunk_delay_s: float = 0.0,
        report_usage: bool = True,
    ) -> None:
        self.api_key = api_key
        self.responder = responder
        self.chunk_delay_s = chunk_delay_s
        self.report_usage = report_usage
        self.requests: list[dict[str, Any]] = []
        self.usages: list[Usage] = []
        self.disconnects = 0
        self._script: deque[Reply] = deque()
        self._counter = TokenCounter()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self) -> str:
        """Listen on 127.0.0.1 (a free port); returns the base URL for the SDK (`.../v1`)."""
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        # Load the tokenizer now rather than inside the first request.
        await asyncio.to_thread(self._counter.for_model, "gpt-4o")
        return self.base_url

    async def stop(self) -> None:
        """Close the listening socket and every open connection."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def script(self, *replies: Reply) -> None:
        """Queue `replies`; each request takes the next one."""
        self._script.extend(replies)

    @property
    def pending(self) -> int:
        """Scripted replies not used yet."""
        return len(self._script)

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens of every completed answer so far."""
        return sum(u.prompt_tokens for u in self.usages)

    @property
    def completion_tokens(self) -> int:
        """Completion tokens of every completed answer so far."""
        return sum(u.completion_tokens for u in self.usages)

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        if self.api_key is not None and request.headers.get("Authorization") != (
            f"Bearer {self.api_key}"
        ):
            return _error(401, "Incorrect API key provided.", code="invalid_api_key")
        body = await request.json(loads=orjson.loads)
        self.requests.append(body)
        if self._script:
            reply = self._script.popleft()
        elif self.responder is not None:
            reply = self.responder(body)
        else:
            return _error(400, "FakeOpenAI: no scripted reply left for this request.")
        if isinstance(reply, ErrorReply):
            headers = {} if reply.retry_after is None else {"Retry-After": f"{reply.retry_after:g}"}
            return _error(reply.status, reply.message, headers=headers)
        answer = reply.reply if isinstance(reply, DyingReply | StallingReply) else reply
        fault = reply if isinstance(reply, DyingReply | StallingReply) else None
        if not body.get("stream"):
            if await self._fault(request, fault, 0):
                return web.StreamResponse()  # never sent: the connection is gone
            usage = await self._usage(body, answer)
            model = str(body.get("model", ""))
            return web.json_response(_completion(model, answer, usage), dumps=_dumps)
        return await self._stream(request, body, answer, fault)

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        answer: TextReply | ToolCallReply,
        fault: DyingReply | StallingReply | None,
    ) -> web.StreamResponse:
        model = str(body.get("model", ""))
        asked = bool((body.get("stream_options") or {}).get("include_usage"))
        include_usage = asked and self.report_usage
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        chunk = _ChunkMaker(model, include_usage)
        try:
            if await self._fault(request, fault, 0):
                return response
            await response.prepare(request)
            for sent, data in enumerate(chunk.deltas(answer), start=1):
                await response.write(b"data: " + _dumps(data).encode() + b"\n\n")
                if await self._fault(request, fault, sent):
                    return response
                if self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
            usage = await self._usage(body, answer)
            if include_usage:
                await response.write(b"data: " + _dumps(chunk.usage(usage)).encode() + b"\n\n")
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionResetError:
            # The client hung up (a timeout, a stop): what the test provoked, not a fault here.
            self.disconnects += 1
        return response

    async def _fault(
        self, request: web.Request, fault: DyingReply | StallingReply | None, sent: int
    ) -> bool:
        """Plays `fault` once `sent` chunks are out; True when the connection is gone."""
        if fault is None or sent != fault.after_chunks:
            return False
        if isinstance(fault, StallingReply):
            await asyncio.sleep(fault.stall_s)
            return False
        # Drop the connection: mid-body, the client sees an incomplete chunked body.
        assert request.transport is not None
        request.transport.abort()
        return True

    async def _usage(self, body: dict[str, Any], answer: TextReply | ToolCallReply) -> Usage:
        """Counts the request and the answer with tiktoken, as OpenAI would bill them."""
        model = str(body.get("model", ""))
        calls = answer.calls if isinstance(answer, ToolCallReply) else ()

        def count() -> Usage:
            return Usage(
                prompt_tokens=self._counter.count_messages(
                    body.get("messages") or [], model, body.get("tools")
                ),
                completion_tokens=self._counter.count_completion(
                    answer.text, [(c.name, c.arguments_json) for c in calls], model
                ),
            )

        usage = await asyncio.to_thread(count)
        self.usages.append(usage)
        return usage


class _ChunkMaker:
    """Builds the `chat.completion.chunk` objects of one streamed answer."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage

    def deltas(self, answer: TextReply | ToolCallReply) -> list[dict[str, Any]]:
        calls = answer.calls if isinstance(answer, ToolCallReply) else ()
        pieces = answer.pieces if isinstance(answer, TextReply) else 4
        first: dict[str, Any] = {"role": "assistant", "content": "" if not calls else None}
        chunks = [self._chunk(first)]
        chunks += [self._chunk({"content": piece}) for piece in _split(answer.text, pieces)]
        if isinstance(answer, ToolCallReply):
            chunks += [self._chunk({"tool_calls": [d]}) for d in _tool_call_deltas(answer)]
        chunks.append(self._chunk({}, finish_reason="tool_calls" if calls else "stop"))
        return chunks

    def usage(self, usage: Usage) -> dict[str, Any]:
        return {
            **self._base(),
            "choices": [],
            "usage": {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.prompt_tokens + usage.completion_tokens,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
        }

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        chunk = {**self._base(), "choices": [choice]}
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def _base(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_fake",
            "service_tier": "default",
        }


def _tool_call_deltas(answer: ToolCallReply) -> list[dict[str, Any]]:
    """The `tool_calls` delta entries: id and name first, then argument fragments."""
    per_call: list[list[dict[str, Any]]] = []
    for index, call in enumerate(answer.calls):
        opening = {
            "index": index,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        fragments = [
            {"index": index, "function": {"arguments": piece}}
            for piece in _split(call.arguments_json, answer.fragments)
        ]
        per_call.append([opening, *fragments])
    if not answer.interleave:
        return [delta for deltas in per_call for delta in deltas]
    longest = max((len(d) for d in per_call), default=0)
    return [deltas[i] for i in range(longest) for deltas in per_call if i < len(deltas)]


def _completion(model: str, answer: TextReply | ToolCallReply, usage: Usage) -> dict[str, Any]:
    """The non-streamed `chat.completion` object for `answer`."""
    calls = answer.calls if isinstance(answer, ToolCallReply) else ()
    message: dict[str, Any] = {"role": "assistant", "content": answer.text or None}
    if calls:
        message["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments_json},
            }
            for c in calls
        ]
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if calls else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        },
    }


def _error(
    status: int, message: str, *, code: str | None = None, headers: Mapping[str, str] | None = None
) -> web.Response:
    kind = (
        "server_error"
        if status >= 500
        else "requests"
        if status == 429
        else "invalid_request_error"
    )
    if code is None and status == 429:
        code = "rate_limit_exceeded"
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers, dumps=_dumps)


def _split(text: str, pieces: int) -> list[str]:
    """`text` in `pieces` nearly equal consecutive parts (fewer if it is shorter)."""
    if not text:
        return []
    pieces = max(1, min(pieces, len(text)))
    size, extra = divmod(len(text), pieces)
    parts, start = [], 0
    for i in range(pieces):
        end = start + size + (1 if i < extra else 0)
        parts.append(text[start:end])
        start = end
    return parts


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
