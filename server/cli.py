"""The `leadstream` command: serve, token, seed, chat."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time

from aiohttp import web

from leadstream import __version__
from leadstream.server.app import create_app, open_store
from leadstream.server.auth import TokenSigner
from leadstream.server.chat_client import FeedWatcher, TerminalChat
from leadstream.server.config import ConfigError, Settings, make_private_dir
from leadstream.server.logs import configure_logging, wants_json
from leadstream.server.seeding import seed_directory
from leadstream.server.worker import print_queue_stats, run_worker
from leadstream.store.errors import StoreError

# The demo link `serve` prints on a terminal.
DEMO_LINK_TTL_S = 24 * 3600


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="leadstream", description="Leadstream server and tools")
    parser.add_argument("--version", action="version", version=f"leadstream {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)

    token = commands.add_parser("token", help="print a bearer token")
    token.add_argument("--org", required=True)
    token.add_argument("--user", required=True)
    token.add_argument("--ttl", type=int, default=None, help="lifetime in seconds")

    seed = commands.add_parser("seed", help="fill the local people directory")
    seed.add_argument("--people", type=int, default=None, help="directory size [100000]")

    watch = commands.add_parser("watch", help="print the org's live lead changes")
    watch.add_argument("--url", default="http://127.0.0.1:8080")
    watch.add_argument("--token", default=None, help="[$LEADSTREAM_TOKEN, else one signed here]")
    watch.add_argument("--org", default="demo")
    watch.add_argument("--user", default="demo")

    commands.add_parser("worker", help="run background jobs only (needs REDIS_URL)")
    commands.add_parser("jobs", help="show the Redis job queue and its dead letters")
    commands.add_parser("db", help="database tasks").add_argument(
        "task", choices=["init"], help="init: create tables and indexes (idempotent)"
    )

    chat = commands.add_parser("chat", help="send one message and show the streamed reply")
    chat.add_argument("text")
    chat.add_argument("--url", default="http://127.0.0.1:8080")
    chat.add_argument("--token", default=None, help="[$LEADSTREAM_TOKEN, else one signed here]")
    chat.add_argument("--conversation", default=None, help="continue this conversation id")
    chat.add_argument("--org", default="demo", help="org of a locally signed token [demo]")
    chat.add_argument("--user", default="demo", help="user of a locally signed token [demo]")

    args = parser.parse_args(argv)
    # Whatever the server writes (database, secret, exports, uploads) is its owner's
    # only: other local users must not read every tenant's leads.
    os.umask(0o077)
    try:
        configure_logging(
            os.environ.get("LEADSTREAM_LOG_LEVEL", "INFO"),
            json=wants_json(os.environ.get("LEADSTREAM_LOG_FORMAT"), sys.stderr),
        )
        settings = Settings.from_env()
        if args.command == "serve":
            return _serve(settings.with_secret(), args.host, args.port)
        if args.command == "token":
            return _token(settings.with_secret(), args.org, args.user, args.ttl)
        if args.command == "seed":
            return asyncio.run(_seed(settings, args.people))
        if args.command == "watch":
            return asyncio.run(_watch(settings, args))
        if args.command == "worker":
            asyncio.run(run_worker(settings.with_secret()))
            return 0
        if args.command == "jobs":
            asyncio.run(print_queue_stats(settings))
            return 0
        if args.command == "db":
            return asyncio.run(_db_init(settings))
        return asyncio.run(_chat(settings, args))
    except ConfigError as exc:
        print(f"leadstream: configuration error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, StoreError) as exc:
        print(f"leadstream: {exc}", file=sys.stderr)
        return 2


def _serve(settings: Settings, host: str, port: int) -> int:
    make_private_dir(settings.data_dir)
    app = create_app(settings)
    url = f"http://{host}:{port}/"
    print(f"Leadstream {__version__} on {url}", flush=True)
    if settings.auth_mode == "token" and sys.stdout.isatty():
        # Whoever reads this terminal holds the secret anyway; the link saves a step.
        # Never on a pipe: containers ship stdout to log collectors.
        demo = TokenSigner(settings.secret, default_ttl_s=DEMO_LINK_TTL_S).issue("demo", "demo")
        print(f"Open {url}?token={demo.token} to chat as demo/demo (valid 24 h)", flush=True)
    elif settings.auth_mode == "token":
        print(
            "For a link to the page: leadstream token --org demo --user demo, "
            f"then open {url}?token=TOKEN",
            flush=True,
        )
    web.run_app(app, host=host, port=port, print=None, access_log=None)
    return 0


def _token(settings: Settings, org: str, user: str, ttl: int | None) -> int:
    signer = TokenSigner(settings.secret, default_ttl_s=settings.token_ttl_s)
    print(signer.issue(org, user, ttl).token)
    return 0


async def _seed(settings: Settings, people: int | None) -> int:
    count = settings.people if people is None else people
    if count < 0:
        raise ValueError("--people must not be negative")
    store = open_store(settings)
    await store.open()
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        print(f"\rseeding {done:,}/{total:,} people", end="", flush=True)

    try:
        added = await seed_directory(store, count, seed=settings.people_seed, progress=progress)
        total = await store.count_people()
    finally:
        await store.close()
    elapsed = time.perf_counter() - started
    print(f"\rdirectory: {total:,} people ({added:,} added in {elapsed:.1f}s)")
    return 0


async def _db_init(settings: Settings) -> int:
    store = open_store(settings)
    await store.open()  # creates what is missing; safe to run again
    await store.close()
    print(f"{store.backend} store ready: {settings.store_url.split('@')[-1]}")
    return 0


def _client_token(settings: Settings, args: argparse.Namespace) -> str:
    token = args.token or os.environ.get("LEADSTREAM_TOKEN")
    if token:
        return token
    local = settings.with_secret()
    return TokenSigner(local.secret, default_ttl_s=24 * 3600).issue(args.org, args.user).token


async def _chat(settings: Settings, args: argparse.Namespace) -> int:
    return await TerminalChat(args.url, _client_token(settings, args)).run(
        args.text, args.conversation
    )


async def _watch(settings: Settings, args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return await FeedWatcher(args.url, _client_token(settings, args)).run(stop)


if __name__ == "__main__":
    sys.exit(main())
