"""What the hardening checks cost on the hot paths (issue 10): the chat path
(`chat:send` -> `chat:done` for "Find 100 CTOs in fintech with phone
numbers") and the list path (`GET /api/leads`, first pages of each sort and
a `q` search), measured on this tree and on a baseline commit from before
the checks, in the same script, alternating rounds so that machine noise
falls on both alike. Prints medians and the ratio this tree / baseline.

Both servers are `leadstream serve` processes on the embedded defaults, each
on a copy of one seeded database, with the tiered rate limiter off on both
(it predates the checks, is measured by bench/ratelimit_overhead.py, and
would refuse the bench's pace); every check of issue 10 is on.

Run: python bench/hardening_overhead.py [--baseline 533a5ca] [--rounds 6] [--requests 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import socketio

from leadstream.server.auth import TokenSigner

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # process helpers
from support import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-" + "b" * 40
REQUEST = "Find 100 CTOs in fintech with phone numbers"
LISTS = [
    "limit=50",
    "limit=50&sort=name:asc",
    "limit=50&sort=company:desc",
    "limit=50&hasPhone=true",
    "limit=50&q=novapay",
    "limit=50&q=chief+tech",
]


def serve_tree(name: str, tree: Path, folder: Path, template: Path) -> ServerProcess:
    """`leadstream serve` from one source tree (the package is found on PYTHONPATH),
    on its own copy of the `template` database."""
    package_parent = folder / f"{name}-pkg"
    package_parent.mkdir()
    (package_parent / "leadstream").symlink_to(tree)
    data = folder / f"{name}-data"
    data.mkdir()
    shutil.copy(template, data / "leadstream.db")
    env = {
        "PYTHONPATH": str(package_parent),
        "LEADSTREAM_DATA_DIR": str(data),
        "LEADSTREAM_STORE": f"sqlite:///{data / 'leadstream.db'}",
        "LEADSTREAM_SECRET": SECRET,
        "LEADSTREAM_LOG_LEVEL": "WARNING",
        # The tiered rate limiter is the same on both sides (measured on its own by
        # bench/ratelimit_overhead.py); off, so it cannot refuse the bench's pace.
        "LEADSTREAM_RATE_LIMITS": "off",
    }
    return ServerProcess(folder / name, env, name=name)


async def list_round(
    http: aiohttp.ClientSession, url: str, requests: int, users: int
) -> list[float]:
    signer = TokenSigner(SECRET, default_ttl_s=3600)
    headers = [
        {"Authorization": f"Bearer {signer.issue('bench', f'u{n}').token}"} for n in range(users)
    ]
    times = []
    for n in range(requests):
        query = LISTS[n % len(LISTS)]
        started = time.perf_counter()
        async with http.get(f"{url}/api/leads?{query}", headers=headers[n % users]) as response:
            await response.read()
            assert response.status == 200, response.status
        times.append(time.perf_counter() - started)
    return times


async def chat_round(url: str, replies: int) -> list[float]:
    token = TokenSigner(SECRET, default_ttl_s=3600).issue("bench", "chat").token
    sio = socketio.AsyncClient(reconnection=False)
    done: asyncio.Future[float] | None = None

    @sio.on("chat:done")
    async def on_done(data: dict) -> None:
        if done is not None and not done.done():
            done.set_result(time.perf_counter())

    await sio.connect(url, auth={"token": token}, transports=["websocket"])
    loop = asyncio.get_running_loop()
    times = []
    for _ in range(replies):
        done = loop.create_future()
        started = time.perf_counter()
        ack = await sio.call("chat:send", {"text": REQUEST}, timeout=30)
        assert ack["ok"], ack
        times.append(await done - started)
        await asyncio.sleep(0.3)  # a person's pace: within the event limits
    await sio.disconnect()
    return times


def seed_template(folder: Path) -> Path:
    data = folder / "template"
    subprocess.run(
        [sys.executable, "-m", "leadstream", "seed"],
        cwd=folder,
        check=True,
        stdout=subprocess.DEVNULL,
        env={
            **os.environ,
            "LEADSTREAM_DATA_DIR": str(data),
            "LEADSTREAM_SECRET": SECRET,
            "LEADSTREAM_STORE": f"sqlite:///{data / 'leadstream.db'}",
        },
    )
    return data / "leadstream.db"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="533a5ca", help="commit before the checks")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=200, help="list requests per round")
    parser.add_argument("--replies", type=int, default=10, help="chat replies per round")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        baseline_tree = folder / "baseline-tree"
        git = ["git", "-C", str(ROOT), "worktree"]
        subprocess.run([*git, "add", "--detach", str(baseline_tree), args.baseline], check=True)
        try:
            template = seed_template(folder)
            servers = [
                serve_tree("baseline", baseline_tree, folder, template),
                serve_tree("current", ROOT, folder, template),
            ]
            asyncio.run(measure(servers, args))
        finally:
            subprocess.run([*git, "remove", "--force", str(baseline_tree)], check=False)


async def measure(servers: list[ServerProcess], args: argparse.Namespace) -> None:
    lists: dict[str, list[float]] = {s.name: [] for s in servers}
    chats: dict[str, list[float]] = {s.name: [] for s in servers}
    async with contextlib.AsyncExitStack() as running, aiohttp.ClientSession() as http:
        for server in servers:
            await running.enter_async_context(server)
        for server in servers:
            await list_round(http, server.url, 30, 5)  # warm caches and connections
            await chat_round(server.url, 2)
        for n in range(args.rounds):
            order = servers if n % 2 == 0 else servers[::-1]
            for server in order:
                lists[server.name] += await list_round(http, server.url, args.requests, 5)
                chats[server.name] += await chat_round(server.url, args.replies)
    print(f"baseline {args.baseline} vs this tree, {args.rounds} alternating rounds")
    for label, figures in (("GET /api/leads", lists), ("chat:send -> chat:done", chats)):
        base = statistics.median(figures["baseline"])
        current = statistics.median(figures["current"])
        print(
            f"  {label:24} baseline p50 {base * 1000:6.2f} ms   this tree p50 "
            f"{current * 1000:6.2f} ms   ratio {current / base:.3f}  "
            f"(n={len(figures['current'])})"
        )


if __name__ == "__main__":
    main()
