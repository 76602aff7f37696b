"""A MongoDB stand-in for the store contract tests, for machines without a
MongoDB server: mongoeco's wire-protocol server (its in-memory engine), so
the real `AsyncMongoClient` talks to it over TCP and our driver code runs.

mongoeco needs Python 3.13, so it runs in its own interpreter and virtual
environment: `.venv/mongoeco` (inside the ignored `.venv` folder), or the
interpreter named by `LEADSTREAM_MONGOECO_PYTHON`. Made once with:

    python3.13 -m venv .venv/mongoeco
    .venv/mongoeco/bin/pip install "mongoeco[wire]==4.11.0"

The tests import `MongoStandin` and start this file as a script with that
interpreter: it serves on a free loopback port, prints the URI on one line,
and stops when its standard input closes (so it never outlives the tests).
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent
PYTHON_ENV = "LEADSTREAM_MONGOECO_PYTHON"
START_TIMEOUT_S = 30


def standin_python() -> Path | None:
    """The Python 3.13 interpreter that has mongoeco, if there is one."""
    named = os.environ.get(PYTHON_ENV)
    if named:
        return Path(named)
    default = REPO / ".venv" / "mongoeco" / "bin" / "python"
    return default if default.exists() else None


class MongoStandin:
    """One mongoeco server process for a test session.

    :param python: an interpreter with `mongoeco[wire]` installed.
    :param log_path: where the server's output goes (shown if it fails to start).
    """

    def __init__(self, python: Path, log_path: Path) -> None:
        self.python = python
        self.log_path = log_path
        self.uri: str | None = None
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> str:
        """Start the server; return its `mongodb://` URI."""
        log = self.log_path.open("w")
        self._process = subprocess.Popen(
            [str(self.python), __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        log.close()
        stdout = self._process.stdout
        line = _read_line(stdout, START_TIMEOUT_S) if stdout is not None else ""
        if not line.startswith("mongodb://"):
            self.stop()
            raise RuntimeError(
                f"the mongoeco stand-in did not start ({self.python}):\n"
                + self.log_path.read_text()
            )
        # Its one event loop can be busy for seconds on a big write: give the
        # driver's heartbeat more than its default 20 s before it gives up.
        self.uri = line.strip() + "&connectTimeoutMS=60000"
        return self.uri

    def stop(self) -> None:
        """Close its standard input (it then shuts down); kill it if it lingers."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _read_line(stream: IO[str], timeout_s: float) -> str:
    """One line from a pipe, or "" when none comes in time."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            return ""
    return stream.readline()


def serve() -> None:
    """Run the server until standard input closes (Python 3.13, mongoeco)."""
    import asyncio
    import threading

    from mongoeco.engines.memory import MemoryEngine  # type: ignore[import-not-found]
    from mongoeco.wire.proxy import AsyncMongoEcoProxyServer  # type: ignore[import-not-found]

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        # A thread waits for EOF on stdin: the test process closed it, or died.
        threading.Thread(
            target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)), daemon=True
        ).start()
        async with AsyncMongoEcoProxyServer(engine=MemoryEngine(), host="127.0.0.1") as proxy:
            print(proxy.address.uri, flush=True)
            await stop.wait()

    asyncio.run(run())


if __name__ == "__main__":
    serve()
