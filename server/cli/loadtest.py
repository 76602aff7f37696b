"""`leadstream loadtest`: many subscribed sockets against a running server,
a steady stream of lead changes, and what the sockets saw.

Shape (issue 12, the operator's measurement):

- `--sockets 2000,5000` steps; at each step the sockets missing are added
  (each one a user of its own, `--per-org` sockets per org, every socket
  subscribed with `leads:subscribe {}`), then for `--seconds` every active
  org gets `--rate` lead changes per second through REST (`PATCH
  /api/leads/{id}`), each carrying its send time in the lead's title.
- Clients are raw Engine.IO v4 websockets (`feed_socket.FeedSocket`, an
  `asyncio.Protocol` that parses the server's frames itself: a few KB and a
  few µs per received event), spread over `--procs` client processes. `--deflate` makes them offer
  permessage-deflate as every browser does. `--client-nice N` runs them at
  nice N: on a box shared with the server their work (reading, and at
  `--drop` the kernel's tearing down of their sockets) then yields to the
  server's, as clients on other machines would cost the server's box
  nothing; their CPU is still measured and reported.
- Against a loopback URL, sockets are spread over source addresses
  127.0.0.2, .3, ... (`--per-address` each), so per-address connection and
  handshake limits are not what is measured.
- A row per step: sockets connected, changes sent, deliveries (socket x
  change) expected and lost, latency from the send time to receipt (p50,
  p99, max; one clock: run it on the server's machine), and with
  `--server-pid` (children included, so `serve --workers N` counts whole)
  the server's CPU (in all, and per delivery: the REST writes' share
  included) and memory per added socket; the load generator's own CPU (this
  process and its client processes: on a shared box it is the server's
  competition); the longest garbage collection pause comes from `/metrics`.
- `--drop` (needs `--server-pid`): after the last step every client process
  is killed at once, as a balancer restart or a network blip does, and the
  run reports how long the server took to release the sockets (its open
  descriptors down by the number of client sockets) and the slowest
  `/healthz` answer meanwhile (asked every 50 ms).

Tokens are signed here with the server's secret (`--secret`, else
`LEADSTREAM_SECRET` or `data/secret`). Run it against a server of your own:
it writes to orgs named `lt-RUN-N`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import multiprocessing
import os
import threading
import time
import urllib.request
import uuid
from array import array
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import aiohttp

from leadstream.pacing import Backoff
from leadstream.server.auth import TokenSigner
from leadstream.server.cli.feed_socket import STAMP, FeedSocket, Tally

# Within the server's default per-address limits (500 connections, 30 handshakes/s).
PER_ADDRESS = 100
ADDRESS_CONNECTS_PER_S = 20
# A socket whose connect failed tries again, jittered (0.5-1 s, 1-2 s, 2-4 s).
CONNECT_RETRY = Backoff(attempts=4, base_delay_s=1.0, max_delay_s=8.0)
# The issue's target for the longest pause (a bucket bound of leadstream_gc_pause_seconds).
SLOW_GC_S = 0.05
# Scrapes of /metrics per GC reading: enough to reach every worker of `serve --workers 2`.
GC_SCRAPES = 8
# Orgs whose writes share a source address (the default limit is 100 requests/s per address).
WRITER_ORGS = 40
# `--drop`: how long to wait for the server to release every socket, how often to ask
# /healthz meanwhile, and the descriptors (keep-alive connections of the run's own HTTP
# clients) still counted as released.
DROP_WAIT_S = 120.0
DROP_POLL_S = 0.05
DROP_SLACK_FDS = 20


class LoadTestError(RuntimeError):
    """The load test cannot run (server unreachable, writes refused)."""


# --------------------------------------------------------------------- client side


class ClientProcess:
    """Runs in a client process: opens its share of sockets and reports."""

    def __init__(self, url: str, deflate: int) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        self.deflate = deflate
        self.tally = Tally()
        self.sockets: list[FeedSocket] = []

    async def connect(
        self, targets: Sequence[tuple[str, str, str | None]], per_s: float
    ) -> dict[str, Any]:
        """Open a socket per (org, token, source address), `per_s` started a second."""
        errors: list[str] = []
        gate = asyncio.Semaphore(200)

        async def one(org: str, token: str, address: str | None) -> None:
            async with gate:
                for attempt in range(CONNECT_RETRY.attempts):
                    socket = FeedSocket(org, self.tally, self.deflate)
                    try:
                        await socket.open(self.host, self.port, token, address, tls=self.tls)
                    except (ConnectionError, TimeoutError, OSError) as exc:
                        socket.close()
                        if attempt == CONNECT_RETRY.attempts - 1:
                            errors.append(str(exc) or type(exc).__name__)
                            return
                        await asyncio.sleep(CONNECT_RETRY.delay(attempt + 1))
                    else:
                        self.sockets.append(socket)
                        return

        tasks = []
        async for index in _paced(len(targets), per_s):
            tasks.append(asyncio.create_task(one(*targets[index])))
        await asyncio.gather(*tasks)
        return {"failed": len(errors), "errors": sorted(set(errors))[:3]}

    def start(self, run: str) -> dict[str, Any]:
        self.tally.run = run
        self.tally.latencies = array("d")
        for socket in self.sockets:
            socket.received = 0
            socket.seen.clear()
        return {}

    def report(self) -> dict[str, Any]:
        received: dict[str, list[int]] = {}  # a closed socket's missed changes are lost too
        for socket in self.sockets:
            received.setdefault(socket.org, []).append(socket.received)
        return {
            "open": sum(not s.closed for s in self.sockets),
            "closed": sum(s.closed for s in self.sockets),
            "received": received,
            "latencies": self.tally.latencies.tobytes(),
        }

    async def close(self) -> None:
        for socket in self.sockets:
            socket.close()
        await asyncio.sleep(0)  # the transports close on the next loop turn


def client_main(conn: Connection, url: str, deflate: int, nice: int = 0) -> None:
    """A client process's entry point: commands in, results out, over `conn`;
    at `nice` (added to this process's)."""
    if nice:
        os.nice(nice)
    asyncio.run(_serve_commands(conn, ClientProcess(url, deflate)))


async def _serve_commands(conn: Connection, clients: ClientProcess) -> None:
    while True:
        command = await asyncio.to_thread(conn.recv)
        op = command["op"]
        if op == "connect":
            result = await clients.connect(command["targets"], command["per_s"])
        elif op == "start":
            result = clients.start(command["run"])
        elif op == "report":
            result = clients.report()
        else:
            await clients.close()
            conn.send({})
            return
        conn.send(result)


class ClientPool:
    """The client processes, each holding a share of the sockets."""

    def __init__(self, processes: int, url: str, deflate: int, nice: int = 0) -> None:
        context = multiprocessing.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        for _ in range(processes):
            parent, child = context.Pipe()
            proc = context.Process(
                target=client_main, args=(child, url, deflate, nice), daemon=True
            )
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    async def ask(self, commands: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        for conn, command in zip(self.conns, commands, strict=True):
            conn.send(command)
        return list(await asyncio.gather(*(asyncio.to_thread(c.recv) for c in self.conns)))

    async def all(self, **command: Any) -> list[dict[str, Any]]:
        return await self.ask([command] * len(self.conns))

    def kill(self) -> None:
        """Kill every client process at once: the kernel closes all their sockets."""
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.join(timeout=10)

    async def close(self) -> None:
        if not any(proc.is_alive() for proc in self.procs):
            return
        with contextlib.suppress(OSError, EOFError):
            await self.all(op="exit")
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()


# --------------------------------------------------------------------- the run


@dataclass(frozen=True)
class LoadPlan:
    """What to run.

    :param url: the server (`http://host:port`).
    :param steps: socket counts, ascending (`2000,5000`).
    :param rate: lead changes per second per active org.
    :param per_org: subscribed sockets per org.
    :param seconds: how long each step writes.
    :param processes: client processes.
    :param deflate: permessage-deflate window bits the clients offer (0: none).
    :param per_address: sockets per loopback source address.
    :param connect_rate: sockets opened per second, all processes together.
    :param server_pids: server processes (children included) for CPU and memory.
    :param drop: kill every client at once after the last step and time the release.
    :param client_nice: the client processes' nice value (0: as this process).
    """

    url: str
    steps: tuple[int, ...]
    rate: float = 1.0
    per_org: int = 100
    seconds: float = 20.0
    processes: int = 1
    deflate: int = 0
    per_address: int = PER_ADDRESS
    connect_rate: float = 500.0
    server_pids: tuple[int, ...] = ()
    drop: bool = False
    client_nice: int = 0


@dataclass
class StepResult:
    """One row of the table."""

    sockets: int
    connected: int
    orgs: int
    sent: int = 0
    write_errors: int = 0
    expected: int = 0
    lost: int = 0
    latencies: list[float] = field(default_factory=list)
    cpu_percent: float | None = None
    generator_cpu_percent: float = 0.0  # this process and its client processes
    cpu_s: float | None = None  # server CPU seconds while writing
    rss_kb_per_socket: float | None = None
    gc_longest_s: float | None = None
    gc_slow: int | None = None  # collections longer than SLOW_GC_S during the step


@dataclass
class DropResult:
    """What `--drop` saw: sockets let go of at once, and the server meanwhile."""

    sockets: int
    released_s: float | None  # None: not released within DROP_WAIT_S
    healthz_slowest_s: float  # inf: a /healthz that failed or timed out
    healthz_asked: int


class LoadTest:
    """Runs a `LoadPlan` and prints a row per step (see the module docstring)."""

    def __init__(self, plan: LoadPlan, secret: str, *, out: TextIO) -> None:
        self.plan = plan
        self.out = out
        self.run_id = uuid.uuid4().hex[:8]
        self.signer = TokenSigner(secret, default_ttl_s=4 * 3600)
        self.base = plan.url.rstrip("/")
        self.lead_ids: list[str] = []  # one lead per org, in org order
        self.connected = 0
        host = urlsplit(self.base).hostname or ""
        # Enough loopback source addresses for `per_address` sockets each.
        needed = math.ceil(max(plan.steps) / plan.per_address)
        self.addresses = _loopback_sources(host)[:needed]
        self.connect_rate = plan.connect_rate
        if self.addresses:
            self.connect_rate = min(plan.connect_rate, ADDRESS_CONNECTS_PER_S * needed)
        self.writers: dict[str, aiohttp.ClientSession] = {}
        self.drop_result: DropResult | None = None

    def org(self, index: int) -> str:
        return f"lt-{self.run_id}-{index}"

    async def run(self) -> list[StepResult]:
        results: list[StepResult] = []
        pool = ClientPool(self.plan.processes, self.base, self.plan.deflate, self.plan.client_nice)
        try:
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=200), timeout=aiohttp.ClientTimeout(total=30)
            ) as http:
                await self._check(http)
                for sockets in self.plan.steps:
                    results.append(await self._step(http, pool, sockets))
                    self._print_row(results[-1], header=len(results) == 1)
                longest = await self._gc_longest(http)
                if longest is not None:
                    self.out.write(
                        f"\nlongest GC pause since the server started (connections included): "
                        f"{1000 * longest:.0f} ms\n"
                    )
                if self.plan.drop:
                    open_sockets = results[-1].connected if results else 0
                    self.drop_result = await self._drop(pool, open_sockets)
                    self._print_drop(self.drop_result)
        finally:
            for session in self.writers.values():
                await session.close()
            await pool.close()
        return results

    async def _drop(self, pool: ClientPool, sockets: int) -> DropResult:
        """Kill the clients holding `sockets` open sockets, and meanwhile ask
        /healthz every DROP_POLL_S on a new connection each time (as a
        liveness probe does), until the server's open descriptors have
        dropped by that many (within DROP_SLACK_FDS; its Redis connections
        stay open) and the last probe has answered.

        The probe runs in a thread of its own, so what it times is the
        server, not this process counting descriptors in `/proc`."""
        for session in self.writers.values():
            await session.close()
        self.writers.clear()
        await asyncio.sleep(1)  # the writers' connections are closed on the server too
        pids = self.plan.server_pids
        fds_before = await asyncio.to_thread(open_fds, pids) - sockets
        answers: list[float] = []  # seconds each probe took (inf: failed)
        stop = threading.Event()
        started = time.monotonic()
        probe = asyncio.create_task(
            asyncio.to_thread(_probe_healthz, self.base + "/healthz", answers, stop)
        )
        await asyncio.to_thread(pool.kill)
        released = None
        while (elapsed := time.monotonic() - started) < DROP_WAIT_S:
            if await asyncio.to_thread(open_fds, pids) <= fds_before + DROP_SLACK_FDS:
                released = elapsed
                break
            await asyncio.sleep(DROP_POLL_S)
        stop.set()
        await probe
        return DropResult(sockets, released, max(answers, default=0.0), len(answers))

    def _print_drop(self, result: DropResult) -> None:
        released = (
            f"released in {result.released_s:.1f} s"
            if result.released_s is not None
            else f"NOT released within {DROP_WAIT_S:.0f} s"
        )
        slowest = (
            f"{1000 * result.healthz_slowest_s:.0f} ms"
            if result.healthz_slowest_s != math.inf
            else "a /healthz failed or timed out"
        )
        self.out.write(
            f"\nall {result.sockets:,} sockets dropped at once: {released}; slowest /healthz "
            f"meanwhile {slowest} ({result.healthz_asked} asked)\n"
        )
        self.out.flush()

    async def _check(self, http: aiohttp.ClientSession) -> None:
        try:
            async with http.get(self.base + "/api/info") as response:
                if response.status != 200:
                    raise LoadTestError(f"{self.base}/api/info answered {response.status}")
        except aiohttp.ClientError as exc:
            raise LoadTestError(f"cannot reach {self.base}: {exc}") from None

    async def _step(
        self, http: aiohttp.ClientSession, pool: ClientPool, sockets: int
    ) -> StepResult:
        orgs = math.ceil(sockets / self.plan.per_org)
        await self._create_leads(http, orgs)
        rss_before = _rss_kb(self.plan.server_pids)
        added = sockets - self.connected
        targets = [
            (self.org(i // self.plan.per_org), self._token(i), self._address(i))
            for i in range(self.connected, sockets)
        ]
        shares = [targets[p :: len(pool.conns)] for p in range(len(pool.conns))]
        per_s = self.connect_rate / len(pool.conns)
        replies = await pool.ask([{"op": "connect", "targets": s, "per_s": per_s} for s in shares])
        failed = sum(r["failed"] for r in replies)
        if failed:
            errors = sorted({e for r in replies for e in r["errors"]})
            self.out.write(f"! {failed} of {added} sockets did not connect: {errors[:3]}\n")
        self.connected = sockets
        await asyncio.sleep(2)  # connections settle (and the server's memory with them)
        rss_after = _rss_kb(self.plan.server_pids)

        run = f"{self.run_id}s{sockets}"
        await pool.all(op="start", run=run)
        gc_before = await self._gc_by_worker()
        generator = (os.getpid(),)  # and its children: the client processes
        generator_before = _cpu_seconds(generator)
        cpu_before, started = _cpu_seconds(self.plan.server_pids), time.monotonic()
        sent, write_errors = await self._write(http, orgs, run)
        elapsed = time.monotonic() - started
        cpu_after = _cpu_seconds(self.plan.server_pids)
        generator_cpu = _cpu_seconds(generator) - generator_before
        await asyncio.sleep(5)  # the last changes arrive
        gc_after = await self._gc_by_worker()
        reports = await pool.all(op="report")

        result = StepResult(sockets=sockets, connected=0, orgs=orgs, write_errors=write_errors)
        result.generator_cpu_percent = 100 * generator_cpu / elapsed
        result.sent = sum(sent)
        for report in reports:
            result.connected += report["open"]
            for org, counts in report["received"].items():
                expected = sent[int(org.rsplit("-", 1)[1])]
                result.expected += expected * len(counts)
                result.lost += sum(max(0, expected - count) for count in counts)
            values = array("d")
            values.frombytes(report["latencies"])
            result.latencies.extend(values)
        result.latencies.sort()
        if self.plan.server_pids:
            result.cpu_percent = 100 * (cpu_after - cpu_before) / elapsed
            result.cpu_s = cpu_after - cpu_before
            if added > 0:
                result.rss_kb_per_socket = (rss_after - rss_before) / added
        deltas = [_gc_delta(gc_before[w], gc_after[w]) for w in gc_before.keys() & gc_after.keys()]
        known = [delta for delta in deltas if delta is not None]
        if known and len(known) == len(deltas):
            result.gc_longest_s = max(longest for longest, _ in known)
            result.gc_slow = sum(slow for _, slow in known)
        return result

    def _token(self, index: int) -> str:
        org = self.org(index // self.plan.per_org)
        return self.signer.issue(org, f"u{index}").token

    def _http(self, org: int, default: aiohttp.ClientSession) -> aiohttp.ClientSession:
        """The writes' session for `org`: WRITER_ORGS orgs per source address, so
        the server's per-address request limit is not what is measured."""
        if not self.addresses:
            return default
        address = self.addresses[(org // WRITER_ORGS) % len(self.addresses)]
        if address not in self.writers:
            self.writers[address] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=100, local_addr=(address, 0)),
                timeout=aiohttp.ClientTimeout(total=30),
            )
        return self.writers[address]

    def _address(self, index: int) -> str | None:
        """Consecutive sockets take turns over the addresses, so each address's
        handshakes are spread out."""
        if not self.addresses:
            return None
        return self.addresses[index % len(self.addresses)]

    async def _create_leads(self, http: aiohttp.ClientSession, orgs: int) -> None:
        for index in range(len(self.lead_ids), orgs):
            headers = {"Authorization": "Bearer " + self.signer.issue(self.org(index), "w").token}
            body = {"name": "Load Test", "company": f"loadtest {self.run_id}"}
            async with http.post(self.base + "/api/leads", json=body, headers=headers) as response:
                if response.status not in (200, 201):
                    text = await response.text()
                    raise LoadTestError(f"POST /api/leads: {response.status} {text[:200]}")
                self.lead_ids.append((await response.json())["id"])

    async def _write(
        self, http: aiohttp.ClientSession, orgs: int, run: str
    ) -> tuple[list[int], int]:
        """`rate` changes a second to each of `orgs` orgs for `seconds`, evenly
        spread; how many each org got acknowledged, and the failed writes."""
        sent = [0] * len(self.lead_ids)
        errors = 0
        tokens = [self.signer.issue(self.org(i), "w").token for i in range(orgs)]
        total = int(self.plan.rate * orgs * self.plan.seconds)
        in_flight: set[asyncio.Task[None]] = set()

        async def one(seq: int) -> None:
            nonlocal errors
            org = seq % orgs
            title = f"{STAMP} {run} {seq} {time.time():.6f}"
            try:
                async with self._http(org, http).patch(
                    f"{self.base}/api/leads/{self.lead_ids[org]}",
                    json={"title": title},
                    headers={"Authorization": "Bearer " + tokens[org]},
                ) as response:
                    await response.read()
                    if response.status == 200:
                        sent[org] += 1
                    else:
                        errors += 1
            except (aiohttp.ClientError, TimeoutError):
                errors += 1

        async for seq in _paced(total, self.plan.rate * orgs):
            task = asyncio.create_task(one(seq))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        await asyncio.gather(*in_flight)
        return sent, errors

    async def _metrics(
        self, http: aiohttp.ClientSession, name: str | tuple[str, ...]
    ) -> list[tuple[str, float]]:
        """The (labels, value) samples of metric `name` (with its `{`; or of
        several) on the server's `/metrics` (the worker that answers); none
        without an answer."""
        try:
            async with http.get(self.base + "/metrics") as response:
                text = await response.text() if response.status == 200 else ""
        except aiohttp.ClientError:
            return []
        samples = (line.rsplit(" ", 1) for line in text.splitlines() if line.startswith(name))
        return [(labels, float(value)) for labels, value in samples]

    async def _gc_by_worker(self) -> dict[str, dict[float, float]]:
        """The GC pause histogram (all generations) of each server process that
        answered one of `GC_SCRAPES` scrapes, by its `leadstream_process_info`
        labels (its pid): with `serve --workers N` each scrape reaches one
        worker, each on a new connection (the kernel picks the worker per
        connection)."""
        workers: dict[str, dict[float, float]] = {}
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as http:
            for _ in range(GC_SCRAPES):
                await self._scrape_gc(http, workers)
        return workers

    async def _scrape_gc(
        self, http: aiohttp.ClientSession, workers: dict[str, dict[float, float]]
    ) -> None:
        """One scrape of `_gc_by_worker`, added to `workers`."""
        names = ("leadstream_process_info{", "leadstream_gc_pause_seconds_bucket{")
        samples = await self._metrics(http, names)
        process = [labels for labels, _ in samples if labels.startswith(names[0])]
        buckets: dict[float, float] = {}
        for labels, count in samples:
            if labels.startswith(names[1]):
                bound = labels.split('le="', 1)[1].split('"', 1)[0]
                key = math.inf if bound == "+Inf" else float(bound)
                buckets[key] = buckets.get(key, 0.0) + count
        if process and buckets:
            workers[process[0]] = buckets

    async def _gc_longest(self, http: aiohttp.ClientSession) -> float | None:
        """`leadstream_gc_pause_max_seconds` of the server (the worker that answers)."""
        values = [v for _, v in await self._metrics(http, "leadstream_gc_pause_max_seconds{")]
        return max(values) if values else None

    def _print_row(self, result: StepResult, *, header: bool) -> None:
        if header:
            deflate = f"permessage-deflate {self.plan.deflate} bits" if self.plan.deflate else "no"
            nice = (
                f", client processes at nice {self.plan.client_nice}"
                if self.plan.client_nice
                else ""
            )
            self.out.write(
                f"\n{self.base}: {self.plan.rate:g} changes/s per org, {self.plan.per_org} "
                f"sockets per org, {self.plan.seconds:g} s per step, clients offer "
                f"deflate: {deflate}{nice}\n\n"
                "| sockets | connected | orgs | changes | deliveries | lost | p50 ms | p99 ms "
                "| max ms | server CPU | load generator CPU | CPU µs/delivery | server KB/socket "
                "| GC pauses > 50 ms | longest GC |\n"
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
            )
        lat = result.latencies

        def ms(q: float) -> str:
            return f"{1000 * percentile(lat, q):.0f}" if lat else "-"

        cpu = f"{result.cpu_percent:.0f}%" if result.cpu_percent is not None else "-"
        per_delivery = "-"
        if result.cpu_s is not None and result.expected:
            per_delivery = f"{1e6 * result.cpu_s / result.expected:.0f}"
        rss = f"{result.rss_kb_per_socket:.1f}" if result.rss_kb_per_socket is not None else "-"
        slow = str(result.gc_slow) if result.gc_slow is not None else "-"
        longest = "-"
        if result.gc_longest_s == 0:
            longest = "none"
        elif result.gc_longest_s == math.inf:
            longest = "> 2.5 s"
        elif result.gc_longest_s is not None:
            longest = f"<= {1000 * result.gc_longest_s:g} ms"
        errors = f" ({result.write_errors} failed)" if result.write_errors else ""
        self.out.write(
            f"| {result.sockets:,} | {result.connected:,} | {result.orgs} | {result.sent:,}{errors} "
            f"| {result.expected:,} | {result.lost:,} | {ms(0.5)} | {ms(0.99)} | {ms(1.0)} "
            f"| {cpu} | {result.generator_cpu_percent:.0f}% | {per_delivery} | {rss} | {slow} "
            f"| {longest} |\n"
        )
        self.out.flush()


async def _paced(count: int, per_s: float) -> AsyncIterator[int]:
    """0 .. count - 1, number n at `n / per_s` seconds after the start (on a
    fixed schedule: one that came late does not delay the next)."""
    started = time.monotonic()
    for index in range(count):
        delay = started + index / per_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        yield index


def percentile(ordered: Sequence[float], q: float) -> float:
    """The `q` quantile (0..1) of an ascending sequence (nearest rank)."""
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def _gc_delta(before: dict[float, float], after: dict[float, float]) -> tuple[float, int] | None:
    """From two scrapes of the cumulative pause histogram: the upper bound of
    the bucket of the longest pause between them (0: none), and how many took
    longer than `SLOW_GC_S`; None when the scrapes came from different
    workers (a count went down)."""
    grown = {bound: after[bound] - before.get(bound, 0.0) for bound in sorted(after)}
    if any(count < 0 for count in grown.values()):
        return None  # two scrapes answered by different workers of `serve --workers`
    total = grown.get(math.inf, 0.0)
    if not total:
        return 0.0, 0
    longest = min(bound for bound, count in grown.items() if count >= total)
    under = max((count for bound, count in grown.items() if bound <= SLOW_GC_S), default=0.0)
    return longest, int(total - under)


def _probe_healthz(url: str, answers: list[float], stop: threading.Event) -> None:
    """Ask `url` every DROP_POLL_S, each time on a new connection, adding how
    long each took to `answers` (inf: failed), until `stop` is set; the probe
    in flight then still finishes (a slow answer is what is measured)."""
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # as aiohttp: no proxy
    while not stop.is_set():
        asked_at = time.monotonic()
        try:
            with direct.open(url, timeout=DROP_WAIT_S) as response:
                response.read()
                ok = response.status == 200
        except OSError:  # URLError and HTTPError are OSErrors
            ok = False
        answers.append(time.monotonic() - asked_at if ok else math.inf)
        stop.wait(DROP_POLL_S)


def _loopback_sources(host: str) -> list[str]:
    """Source addresses for a loopback server: 127.0.0.2 .. 127.0.0.254."""
    try:
        if not ipaddress.ip_address(host).is_loopback:
            return []
    except ValueError:
        if host != "localhost":
            return []
    return [f"127.0.0.{i}" for i in range(2, 255)]


def _family(pids: Sequence[int]) -> list[int]:
    """The processes and their children (workers of `serve --workers`)."""
    found: list[int] = []
    for pid in pids:
        found.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                found.extend(int(child) for child in task.read_text().split())
    return found


def _rss_kb(pids: Sequence[int]) -> int:
    total = 0
    for pid in _family(pids):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def open_fds(pids: Sequence[int]) -> int:
    """Open descriptors of the processes and their children: a socket the
    server has not released yet is still one. Counted, not read: reading
    what each of 20,000 descriptors is costs ~6 µs apiece, and polled
    during a drop that took most of a core from the server on a shared box;
    its other descriptors (files, pipes) do not change meanwhile."""
    total = 0
    for pid in _family(pids):
        with contextlib.suppress(OSError):
            total += len(os.listdir(f"/proc/{pid}/fd"))
    return total


def _cpu_seconds(pids: Sequence[int]) -> float:
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in _family(pids):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total
