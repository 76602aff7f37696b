"""Timing every store call, applied once where a store is opened
(`backends.open_store`), not inside each backend.

`TimedStore` wraps a store: each public method of the `Store` protocol
(but `open`, `close` and `subscribe_changes`) reports `(operation,
seconds)` to `on_call` when it returns or raises, the operation being the
method's name (`list_leads`); the methods that stream (`stream_people`,
`iter_leads`) report the wait for each chunk as one call. Everything else
(attributes such as `backend`, `query_bounds`) is the wrapped store's.
Calls a backend makes to itself (`iter_leads` paging through `list_leads`)
are not timed again.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, get_origin, get_type_hints

from leadstream.store.base import Store

OnCall = Callable[[str, float], None]

# Lifecycle and registration, not database calls.
UNTIMED = frozenset({"open", "close", "subscribe_changes"})


def _protocol_methods() -> tuple[frozenset[str], frozenset[str]]:
    """(awaited methods, streaming methods) of the `Store` protocol and its parts."""
    calls: set[str] = set()
    streams: set[str] = set()
    for part in Store.__mro__:
        if part in (Protocol, object) or not getattr(part, "_is_protocol", False):
            continue
        for name, member in vars(part).items():
            if name.startswith("_") or name in UNTIMED or not inspect.isfunction(member):
                continue
            if inspect.iscoroutinefunction(member):
                calls.add(name)
            elif _returns_async_iterator(member):
                streams.add(name)
            else:  # a new kind of method: say here whether and how it is timed
                raise TypeError(f"Store.{name} is neither awaited nor streamed")
    return frozenset(calls), frozenset(streams)


def _returns_async_iterator(method: Callable[..., Any]) -> bool:
    """Whether `method` is declared to return an async iterator (or generator)."""
    origin = get_origin(get_type_hints(method).get("return"))
    return isinstance(origin, type) and issubclass(origin, AsyncIterator)


CALLS, STREAMS = _protocol_methods()


class TimedStore:
    """`store`, with each call of the protocol timed into `on_call`.

    :param store: the backend (not yet opened, or open).
    :param on_call: called with (operation, seconds) after each call, failed
        ones included; settable later (`store.on_call = metrics...`); None: not timed.
    """

    def __init__(self, store: Store, on_call: OnCall | None = None) -> None:
        self.store = store
        self.on_call = on_call
        for name in CALLS:
            setattr(self, name, self._timed_call(name, getattr(store, name)))
        for name in STREAMS:
            setattr(self, name, self._timed_stream(name, getattr(store, name)))

    def __getattr__(self, name: str) -> Any:
        # Only for what __init__ did not set: the store's own attributes.
        if name == "store":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self.store, name)

    def __repr__(self) -> str:
        return f"TimedStore({self.store!r})"

    def _report(self, operation: str, started: float) -> None:
        if self.on_call is not None:
            self.on_call(operation, time.perf_counter() - started)

    def _timed_call(
        self, operation: str, method: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(method)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await method(*args, **kwargs)
            finally:
                self._report(operation, started)

        return timed

    def _timed_stream(
        self, operation: str, method: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        @functools.wraps(method)
        async def timed(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            chunks = method(*args, **kwargs)
            try:
                while True:
                    started = time.perf_counter()
                    try:
                        chunk = await anext(chunks)
                    except StopAsyncIteration:
                        return  # the end, not a call
                    except BaseException:
                        self._report(operation, started)
                        raise
                    self._report(operation, started)
                    yield chunk
            finally:
                close = getattr(chunks, "aclose", None)
                if close is not None:
                    await close()

        return timed
