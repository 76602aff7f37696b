"""The agent loop: one assistant reply, from the model's first token to done.

Each step streams the model's answer; if it asked for tools, they run
(concurrently), their compact results are appended to the conversation and
the model is asked again, until it answers without tools or the step limit
is reached. Text and tool steps are reported through `TurnEvents`; the reply
(text, tool calls with their results, status, usage) is stored at the end,
also when the turn is stopped or fails, so history is never lost.

Spending. Before the first step the reply reserves part of the org's daily
budget in the store (none left: `budget_exceeded`, nothing runs); before each
further step the org's recorded usage plus the reply's own must still be
under the budget (else the reply ends with `budget_exceeded`, its text kept).
However the reply ends, the reservation is released and what it used is
recorded: the model's own usage figures, or, for a step stopped or broken
before they came, the prompt and the text streamed so far counted with
tiktoken.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from leadstream.agent.budget import BudgetExceeded, DailyBudget, Reservation
from leadstream.agent.model import ChatMessage, ChatModel, ModelUnavailable, TextDelta, ToolCall
from leadstream.agent.tokens import PriceTable, TokenCounter
from leadstream.agent.tools import ToolContext, ToolError, parse_arguments, tool_schemas
from leadstream.store.records import Message

log = logging.getLogger(__name__)

SYSTEM_PROMPT = """You are Leadstream, an assistant that finds B2B leads for sales people.
Use the tools: search_leads finds people (rows go straight to the user's screen; you get a
summary and a searchId), save_leads saves a search by searchId, export_leads makes a CSV
(phones first) whose link reaches the user, lookup_profile enriches one person.
Prefer leads with phone numbers when the user asks for them. A follow-up ("only London",
"make it 50", "more") repeats the last search with just that change.
Only enrich the few leads that matter. Never invent contact details. Be brief."""


# Streaming text is stored at most this often, so a crash leaves a partial
# reply and another instance can answer `chat:resume` from the store.
PERSIST_EVERY_S = 0.5


@dataclass
class ReplyState:
    """What the reply has produced so far."""

    text: str = ""
    persisted_at: float = 0.0
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None

    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def usage(self) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "promptTokens": self.prompt_tokens,
            "completionTokens": self.completion_tokens,
        }
        if self.cost_usd is not None:
            usage["costUsd"] = round(self.cost_usd, 6)
        return usage


class AgentObserver(Protocol):
    """Counts what replies do (the server's metrics implement it)."""

    def agent_turn(self, outcome: str = "done") -> None: ...

    def agent_tokens_used(self, prompt: int, completion: int) -> None: ...

    def tool_finished(self, tool: str, seconds: float, *, ok: bool = True) -> None: ...


class AgentLoop:
    """Runs assistant replies with one model and the product's tools.

    :param model: the `ChatModel` that answers (LLM client or offline planner).
    :param max_steps: model calls per reply at most (tool rounds + final answer).
    :param observer: told of each reply, its tokens and tool timings [none].
    """

    def __init__(
        self,
        model: ChatModel,
        *,
        max_steps: int = 6,
        observer: AgentObserver | None = None,
        tokens: TokenCounter | None = None,
        max_prompt_tokens: int = 100_000,
        prices: PriceTable | None = None,
        budget: DailyBudget | None = None,
    ) -> None:
        self.model = model
        self.max_steps = max_steps
        self._observer = observer
        self._tokens = tokens
        self._max_prompt_tokens = max_prompt_tokens
        self._prices = prices
        self._budget = budget or DailyBudget()
        self._tools = tool_schemas()

    async def run(self, ctx: ToolContext, history: list[Message], reply_id: str) -> ReplyState:
        """Answer the last user message of `history`; store the reply under `reply_id`."""
        state = ReplyState()
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, *chat_messages(history)]
        try:
            reservation = await self._budget.reserve(
                ctx.store, ctx.org, cost_usd=self._cost_of(self._budget.reserve_tokens, 0) or 0.0
            )
        except BudgetExceeded as exc:
            await ctx.store.save_reply(reply_id, text="", tool_calls=[], status="failed")
            await ctx.events.error("budget_exceeded", f"The model budget is used up: {exc}.")
            return state
        try:
            await self._steps(ctx, reply_id, messages, state, reservation)
        except asyncio.CancelledError:
            await self._finish(ctx, reply_id, state, reservation, "stopped")
            raise
        except ModelUnavailable as exc:
            log.warning("model unavailable for %s: %s", reply_id, exc)
            await self._finish(
                ctx,
                reply_id,
                state,
                reservation,
                "model_unavailable",
                error="The model is not answering; try again.",
            )
        except BudgetExceeded as exc:
            await self._finish(
                ctx,
                reply_id,
                state,
                reservation,
                "budget_exceeded",
                error=f"The model budget is used up: {exc}; the reply ends here.",
            )
        except BaseException:
            # A bug or a store failure: the caller logs and reports it; the
            # reservation still goes back and what was used is recorded.
            await self._settle(ctx, reservation, state)
            raise
        else:
            await self._finish(ctx, reply_id, state, reservation, "done")
        return state

    def _cost(self, state: ReplyState) -> float | None:
        return self._cost_of(state.prompt_tokens, state.completion_tokens)

    def _cost_of(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        if self._prices is None:
            return None
        return self._prices.cost(self.model.name, prompt_tokens, completion_tokens)

    async def _settle(self, ctx: ToolContext, reservation: Reservation, state: ReplyState) -> None:
        state.cost_usd = self._cost(state)
        await self._budget.settle(
            ctx.store,
            ctx.org,
            reservation,
            state.prompt_tokens,
            state.completion_tokens,
            state.cost_usd,
        )

    def _observe(self, state: ReplyState, outcome: str) -> None:
        if self._observer is not None:
            self._observer.agent_turn(outcome)
            self._observer.agent_tokens_used(state.prompt_tokens, state.completion_tokens)

    async def _finish(
        self,
        ctx: ToolContext,
        reply_id: str,
        state: ReplyState,
        reservation: Reservation,
        outcome: str,
        *,
        error: str | None = None,
    ) -> None:
        """Settle the budget, store the reply, and end it with `chat:done`, or
        with `chat:error` (code `outcome`) when `error` says why it failed."""
        self._observe(state, outcome)
        await self._settle(ctx, reservation, state)
        status = outcome if outcome in ("done", "stopped") else "failed"
        await ctx.store.save_reply(
            reply_id,
            text=state.text,
            tool_calls=state.tool_calls,
            status=status,
            usage=state.usage(),
        )
        if error is not None:
            await ctx.events.error(outcome, error)
        else:
            await ctx.events.done(stopped=outcome == "stopped", usage=state.usage())

    async def _persist(self, ctx: ToolContext, reply_id: str, state: ReplyState) -> None:
        state.persisted_at = time.monotonic()
        await ctx.store.save_reply(
            reply_id,
            text=state.text,
            tool_calls=state.tool_calls,
            status="streaming",
            usage=state.usage(),
        )

    async def _steps(
        self,
        ctx: ToolContext,
        reply_id: str,
        messages: list[ChatMessage],
        state: ReplyState,
        reservation: Reservation,
    ) -> None:
        for step in range(self.max_steps):
            if step:
                await self._budget.check_running(
                    ctx.store, ctx.org, reservation, state.tokens(), self._cost(state)
                )
            calls: list[ToolCall] = []
            step_text = ""
            sent = messages
            if self._tokens is not None:  # oldest tool traffic goes first
                sent = await asyncio.to_thread(
                    self._tokens.trim_history,
                    messages,
                    self.model.name,
                    self._max_prompt_tokens,
                    self._tools,
                )
            counted = False
            try:
                async for event in self.model.stream(sent, self._tools):
                    if isinstance(event, TextDelta):
                        step_text += event.text
                        state.text += event.text
                        await ctx.events.text(event.text)
                        if time.monotonic() - state.persisted_at >= PERSIST_EVERY_S:
                            await self._persist(ctx, reply_id, state)
                    elif isinstance(event, ToolCall):
                        calls.append(event)
                    else:
                        counted = True
                        state.prompt_tokens += event.prompt_tokens
                        state.completion_tokens += event.completion_tokens
            except BaseException:
                if not counted:  # stopped or broken before the model's usage figures
                    await self._count_unfinished(state, sent, step_text)
                raise
            if not calls:
                return
            messages.append(
                {
                    "role": "assistant",
                    "content": step_text or None,
                    "tool_calls": [
                        {
                            "id": call.id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": call.arguments},
                        }
                        for call in calls
                    ],
                }
            )
            await self._persist(ctx, reply_id, state)
            results = await asyncio.gather(*(self._run_tool(ctx, call, state) for call in calls))
            await self._persist(ctx, reply_id, state)
            for call, result in zip(calls, results, strict=True):
                messages.append({"role": "tool", "tool_call_id": call.id, "content": _json(result)})
        note = "\n\n(I stopped after the maximum number of steps for one reply.)"
        state.text += note
        await ctx.events.text(note)

    async def _count_unfinished(
        self, state: ReplyState, sent: list[ChatMessage], text: str
    ) -> None:
        """Add a step's usage counted here, as the provider bills it: the
        prompt sent (messages and tool schemas) and the text streamed so far."""
        if self._tokens is None:  # the offline planner costs nothing
            return
        counter, model, tools = self._tokens, self.model.name, self._tools

        def count() -> tuple[int, int]:
            prompt = counter.count_messages(sent, model, tools)
            return prompt, counter.count_completion(text, [], model)

        prompt, completion = await asyncio.to_thread(count)
        state.prompt_tokens += prompt
        state.completion_tokens += completion

    async def _run_tool(
        self, ctx: ToolContext, call: ToolCall, state: ReplyState
    ) -> dict[str, Any]:
        """Run one tool call; its result (or error) is what the model sees."""
        record: dict[str, Any] = {"callId": call.id, "name": call.name, "args": {}}
        state.tool_calls.append(record)
        started = time.perf_counter()
        try:
            return await self._tool_result(ctx, call, record)
        finally:
            if self._observer is not None:
                ok = record.get("status") == "done"
                self._observer.tool_finished(call.name, time.perf_counter() - started, ok=ok)

    async def _tool_result(
        self, ctx: ToolContext, call: ToolCall, record: dict[str, Any]
    ) -> dict[str, Any]:
        try:
            tool, args = parse_arguments(call.name, call.arguments)
            record["args"] = args.model_dump(exclude_none=True, exclude_defaults=True)
            await ctx.events.tool(call.id, call.name, record["args"], "started")
            outcome = await tool.run(ctx, call.id, args)
        except ToolError as exc:
            error = {"code": exc.code, "message": exc.message}
            record.update(status="error", error=error, result={"error": error})
            await ctx.events.tool(call.id, call.name, record["args"], "error", error=error)
            return {"error": error}
        except Exception:
            # A bug or a failing dependency: logged with its traceback; the
            # model and the user get a tool error, and the reply goes on.
            log.exception("tool %s failed", call.name)
            error = {"code": "internal_error", "message": "the tool failed unexpectedly"}
            record.update(status="error", error=error, result={"error": error})
            await ctx.events.tool(call.id, call.name, record["args"], "error", error=error)
            return {"error": error}
        record.update(status="done", summary=outcome.summary, result=outcome.result)
        await ctx.events.tool(
            call.id,
            call.name,
            record["args"],
            "done",
            summary=outcome.summary,
            result=outcome.public,
        )
        return outcome.result


def chat_messages(history: list[Message]) -> list[ChatMessage]:
    """Stored messages as OpenAI-style chat messages (tool traffic included)."""
    out: list[ChatMessage] = []
    for message in history:
        if message.role == "user":
            out.append({"role": "user", "content": message.text})
            continue
        calls = [c for c in message.tool_calls if "result" in c]
        if calls:
            out.append(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": c["callId"],
                            "type": "function",
                            "function": {"name": c["name"], "arguments": _json(c["args"])},
                        }
                        for c in calls
                    ],
                }
            )
            out.extend(
                {"role": "tool", "tool_call_id": c["callId"], "content": _json(c["result"])}
                for c in calls
            )
        if message.text:
            out.append({"role": "assistant", "content": message.text})
    return out


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()
