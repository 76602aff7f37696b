"""The `leadstream` command: serve, token, seed, chat, watch, loadtest."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import subprocess
import sys
import time

from aiohttp import web

from leadstream import __version__
from leadstream.server.auth import TokenSigner
from leadstream.server.cli.chat_client import FeedWatcher, TerminalChat
from leadstream.server.cli.loadtest import LoadPlan, LoadTest, LoadTestError
from leadstream.server.config import ConfigError, Settings, make_private_dir
from leadstream.server.http.app import create_app
from leadstream.server.jobs.worker import print_queue_stats, run_worker
from leadstream.server.logs import configure_logging, wants_json
from leadstream.server.seeding import seed_directory
from leadstream.server.services import open_store
from leadstream.store.errors import StoreError

# The demo link `serve` prints on a terminal.
DEMO_LINK_TTL_S = 24 * 3600
# Connections the kernel holds for `serve` while its loop is busy (the kernel caps
# it at net.core.somaxconn). aiohttp's 128 overflowed in a reconnect storm: 10,000
# clients at 1,000/s overflowed it 6,150 times, and each dropped SYN is retried
# after 1 s, then 3 s, /healthz included (README, Capacity). 2048 as uvicorn and
# gunicorn.
LISTEN_BACKLOG = 2048


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="leadstream", description="Leadstream server and tools")
    parser.add_argument("--version", action="version", version=f"leadstream {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes sharing the port (SO_REUSEPORT); more than 1 needs REDIS_URL [1]",
    )
    # Set on the processes `--workers` starts: bind with SO_REUSEPORT, print no banner.
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)

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

    load = commands.add_parser(
        "loadtest", help="subscribed sockets + a steady stream of lead changes; prints a table"
    )
    load.add_argument("--url", default="http://127.0.0.1:8080")
    load.add_argument("--sockets", default="1000", help="socket counts, one row each: 2000,5000")
    load.add_argument("--rate", type=float, default=1.0, help="lead changes/s per org [1]")
    load.add_argument("--per-org", type=int, default=100, help="sockets per org [100]")
    load.add_argument("--orgs", type=int, default=None, help="orgs in all (instead of --per-org)")
    load.add_argument("--seconds", type=float, default=20.0, help="writing time per row [20]")
    load.add_argument("--procs", type=int, default=None, help="client processes [1 per 2,500]")
    load.add_argument(
        "--deflate",
        type=int,
        nargs="?",
        const=15,
        default=0,
        metavar="BITS",
        help="clients offer permessage-deflate (as browsers do) with this window [15]",
    )
    load.add_argument("--connect-rate", type=float, default=500.0, help="sockets opened/s [500]")
    load.add_argument(
        "--server-pid",
        type=int,
        action="append",
        default=[],
        help="a server process (children included) for CPU and memory per socket",
    )
    load.add_argument(
        "--drop",
        action="store_true",
        help="then kill every client at once and time the release (needs --server-pid)",
    )
    load.add_argument(
        "--client-nice",
        type=int,
        default=0,
        metavar="N",
        help="run the client processes at nice N (0-19): on the server's own box their work "
        "then yields to the server's, as remote clients' would [0]",
    )
    load.add_argument("--secret", default=None, help="the server's [$LEADSTREAM_SECRET or data/]")

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
        settings = Settings.from_env()
        configure_logging(settings.log_level, json=wants_json(settings.log_format, sys.stderr))
        if args.command == "serve":
            if args.workers < 1:
                raise ValueError("--workers must be at least 1")
            if args.workers > 1:
                return _serve_workers(settings.with_secret(), args)
            return _serve(settings.with_secret(), args.host, args.port, reuse_port=args.reuse_port)
        if args.command == "loadtest":
            return asyncio.run(_loadtest(settings, args))
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


def _serve(settings: Settings, host: str, port: int, *, reuse_port: bool = False) -> int:
    make_private_dir(settings.data_dir)
    loop = _event_loop(settings)
    app = create_app(settings)
    url = f"http://{host}:{port}/"
    if reuse_port:  # one of `--workers`: the parent printed the banner
        print(f"worker {os.getpid()} serving {url}", flush=True)
    else:
        _banner(settings, url)
    web.run_app(
        app,
        host=host,
        port=port,
        print=None,
        access_log=None,
        reuse_port=reuse_port,
        backlog=LISTEN_BACKLOG,
        loop=loop,
    )
    return 0


def _event_loop(settings: Settings) -> asyncio.AbstractEventLoop:
    """`serve`'s loop (LEADSTREAM_EVENT_LOOP). uvloop does the transports'
    work in C: a mass disconnect of 10,000 websockets keeps the loop from
    other work for a third of the time the standard loop does (README,
    Capacity); the standard loop remains a setting away."""
    if settings.event_loop == "uvloop":
        import uvloop  # Settings checked it is installed

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _banner(settings: Settings, url: str) -> None:
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


def _serve_workers(settings: Settings, args: argparse.Namespace) -> int:
    """`serve --workers N`: N full `serve` processes on one port (SO_REUSEPORT:
    the kernel spreads new connections over them), joined by Redis. The
    directory is seeded here first, so the workers find it done. Stops them
    all on SIGTERM/SIGINT, or when one exits (its status is returned)."""
    if not settings.redis_url:
        raise ConfigError(
            "--workers needs REDIS_URL: each worker holds its own sockets, and Redis "
            "carries every event to the workers whose clients need it"
        )
    make_private_dir(settings.data_dir)
    if settings.people:
        asyncio.run(_seed_quietly(settings))
    command = [sys.executable, "-m", "leadstream", "serve", "--host", args.host]
    command += ["--port", str(args.port), "--reuse-port"]
    workers = [subprocess.Popen(command) for _ in range(args.workers)]
    _banner(settings, f"http://{args.host}:{args.port}/")
    print(f"{args.workers} workers: {', '.join(str(w.pid) for w in workers)}", flush=True)
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    status = 0
    while not stopping:
        exited = [w for w in workers if w.poll() is not None]
        if exited:
            status = exited[0].returncode or 1
            print(f"leadstream: worker {exited[0].pid} exited ({status}); stopping", flush=True)
            break
        time.sleep(0.2)
    for worker in workers:
        if worker.poll() is None:
            worker.terminate()
    for worker in workers:
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    return status


async def _seed_quietly(settings: Settings) -> None:
    store = open_store(settings)
    await store.open()
    try:
        await seed_directory(store, settings.people, seed=settings.people_seed)
    finally:
        await store.close()


async def _loadtest(settings: Settings, args: argparse.Namespace) -> int:
    try:
        steps = tuple(sorted(int(part) for part in args.sockets.replace("_", "").split(",")))
    except ValueError:
        steps = ()
    if not steps or steps[0] < 1:
        raise ValueError(f"--sockets takes socket counts like 2000,5000, not {args.sockets!r}")
    if args.rate <= 0 or args.seconds <= 0 or args.per_org < 1 or args.connect_rate <= 0:
        raise ValueError("--rate, --seconds, --per-org and --connect-rate must be positive")
    if args.drop and not args.server_pid:
        raise ValueError("--drop needs --server-pid (it watches the server's sockets)")
    if args.deflate and not 9 <= args.deflate <= 15:
        raise ValueError("--deflate takes a window of 9 to 15 bits")
    if not 0 <= args.client_nice <= 19:
        raise ValueError("--client-nice takes a nice value of 0 to 19 (lower needs root)")
    per_org = math.ceil(steps[-1] / args.orgs) if args.orgs else args.per_org
    plan = LoadPlan(
        url=args.url,
        steps=steps,
        rate=args.rate,
        per_org=per_org,
        seconds=args.seconds,
        processes=args.procs or min(os.cpu_count() or 1, math.ceil(steps[-1] / 2500)),
        deflate=args.deflate,
        connect_rate=args.connect_rate,
        server_pids=tuple(args.server_pid),
        drop=args.drop,
        client_nice=args.client_nice,
    )
    try:
        await LoadTest(plan, _server_secret(settings, args.secret), out=sys.stdout).run()
    except LoadTestError as exc:
        print(f"leadstream loadtest: {exc}", file=sys.stderr)
        return 1
    return 0


def _server_secret(settings: Settings, given: str | None) -> str:
    """The secret the server signs with: given, configured, or the local data folder's."""
    if given or settings.secret:
        return given or settings.secret
    path = settings.data_dir / "secret"
    if not path.exists():
        raise ConfigError(f"no secret to sign tokens with: give --secret (none in {path})")
    return path.read_text().strip()


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
    token = args.token or settings.client_token
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
