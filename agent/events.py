"""What an agent turn tells the outside world while it runs.

The agent does not know about sockets: the realtime layer implements
`TurnEvents` and turns each call into a Socket.IO event of PROTOCOL.md.
"""

from __future__ import annotations

from typing import Any, Protocol


class TurnEvents(Protocol):
    """Sink for the events of one assistant reply (one `messageId`)."""

    async def text(self, piece: str) -> None:
        """The next piece of assistant text."""

    async def tool(
        self,
        call_id: str,
        name: str,
        args: dict[str, Any],
        status: str,
        *,
        summary: str | None = None,
        progress: dict[str, int | None] | None = None,
        error: dict[str, str] | None = None,
        result: dict[str, Any] | None = None,
    ) -> None:
        """A tool step: started, progress, done or error; `result` is what the
        user's client needs of a finished step (an export's `jobId`)."""

    async def batch(
        self,
        call_id: str,
        search_id: str,
        leads: list[dict[str, Any]],
        seq: int,
        *,
        done: bool,
        total: int | None = None,
    ) -> None:
        """Rows of a running search (they go to the client, not the model)."""

    async def done(self, *, stopped: bool, usage: dict[str, Any]) -> None:
        """The reply is over."""

    async def error(self, code: str, message: str) -> None:
        """The reply failed; the conversation stays usable."""
