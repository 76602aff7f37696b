"""`REDIS_URL` -> redis-py asyncio clients, for every Redis user in the app.

Three deployments, one URL each:

- a single server: `redis://[user:pass@]HOST:PORT/DB`, `rediss://...` (TLS),
  `unix:///path/redis.sock` (redis-py's own URL forms);
- Sentinel, in python-socketio's form so the Socket.IO manager reads the same
  URL: `redis+sentinel://[user:pass@]HOST:PORT[,HOST:PORT...]/DB/SERVICE`
  (the credentials and DB are the primary's; the sentinels are asked where
  the primary of SERVICE is, again after a failover);
- Redis Cluster: `redis+cluster://[user:pass@]HOST:PORT[,HOST:PORT...]`
  (`rediss+cluster://` for TLS): any reachable nodes; the client learns the
  others and the slot map from them.

Every client is made here with the options its user needs (`ClientOptions`),
and `RedisConnections` closes all it made, including Sentinel's own
connections to the sentinels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import RedisClusterException, RedisError

from leadstream.server.config import ConfigError

# What every client of the app speaks to: a server, a Sentinel-managed primary, or a cluster.
RedisClient = aioredis.Redis | RedisCluster

SENTINEL_SCHEMES = frozenset({"redis+sentinel", "rediss+sentinel"})
CLUSTER_SCHEMES = frozenset({"redis+cluster", "rediss+cluster"})
SERVER_SCHEMES = frozenset({"redis", "rediss", "unix"})
# What a Redis call raises when a server, a Sentinel or a Cluster node is away
# or refuses: redis-py's cluster client raises RedisClusterException (no node
# answers, a slot not covered), which is not a RedisError. Every Redis user
# that survives an outage catches these.
REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, RedisClusterException)
# Asking a sentinel where the primary is must not hang a request.
SENTINEL_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class ClientOptions:
    """How one user of Redis wants its client to behave.

    :param socket_timeout_s: longest wait for a reply (longer than any blocking
        read the user makes) [5 s].
    :param connect_timeout_s: longest wait for a connection [2 s].
    :param retries: retries of a command after a connection error, with
        capped exponential backoff; 0 fails at once [3].
    """

    socket_timeout_s: float = 5.0
    connect_timeout_s: float = 2.0
    retries: int = 3

    def redis_kwargs(self) -> dict[str, Any]:
        backoff = ExponentialBackoff(cap=1.0, base=0.05) if self.retries else NoBackoff()
        return {
            "socket_timeout": self.socket_timeout_s,
            "socket_connect_timeout": self.connect_timeout_s,
            "retry": Retry(backoff, self.retries),
        }


# The app's shared client: page cache, stop relay, readiness, the job queue
# (its blocking reads wait 1 s, well inside the socket timeout).
SHARED = ClientOptions()
# The rate limiter's own client: a Redis outage fails open quickly instead of
# slowing every request.
RATE_LIMITS = ClientOptions(socket_timeout_s=0.25, connect_timeout_s=0.25, retries=0)


@dataclass(frozen=True)
class RedisTarget:
    """A parsed `REDIS_URL`: what kind of deployment, and where.

    :param kind: `server`, `sentinel` or `cluster`.
    :param url: the URL as given (for `server`, handed to redis-py as is).
    :param nodes: the sentinels or cluster nodes, as (host, port).
    :param service: the Sentinel service name of the primary.
    :param db: the database number (Sentinel; a cluster has only 0).
    :param username: the primary's (or nodes') user.
    :param password: the primary's (or nodes') password.
    :param tls: connect with TLS (`rediss+...`).
    """

    kind: str
    url: str
    nodes: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> RedisTarget:
        """Read `REDIS_URL`; ConfigError with the expected form when it is not one."""
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        if scheme in SERVER_SCHEMES:
            return cls("server", url)
        if scheme not in SENTINEL_SCHEMES | CLUSTER_SCHEMES:
            raise ConfigError(
                "REDIS_URL must be redis://, rediss://, unix://, "
                "redis+sentinel://HOST:PORT[,HOST:PORT...]/DB/SERVICE or "
                f"redis+cluster://HOST:PORT[,HOST:PORT...], not {_redacted(url)!r}"
            )
        parts = urlsplit(url)
        nodes = tuple(_host_port(item, url) for item in parts.netloc.rsplit("@", 1)[-1].split(","))
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        tls = scheme.startswith("rediss")
        path = [segment for segment in parts.path.split("/") if segment]
        if scheme in CLUSTER_SCHEMES:
            if path not in ([], ["0"]):
                raise ConfigError("a Redis Cluster has only database 0: REDIS_URL takes no /DB")
            return cls("cluster", url, nodes, username=username, password=password, tls=tls)
        if len(path) != 2 or not path[0].isdigit():
            raise ConfigError(
                "REDIS_URL for Sentinel must end in /DB/SERVICE "
                f"(e.g. redis+sentinel://host:26379/0/mymaster), not {_redacted(url)!r}"
            )
        return cls(
            "sentinel",
            url,
            nodes,
            service=path[1],
            db=int(path[0]),
            username=username,
            password=password,
            tls=tls,
        )

    @property
    def is_cluster(self) -> bool:
        return self.kind == "cluster"


class RedisConnections:
    """Makes the app's Redis clients from `REDIS_URL`, and closes them all.

    :param url: `REDIS_URL` (see the module docstring for the accepted forms).
    """

    def __init__(self, url: str) -> None:
        self.target = RedisTarget.parse(url)
        self._clients: list[RedisClient] = []
        self._sentinel: Sentinel | None = None

    @property
    def is_cluster(self) -> bool:
        """Keys a script or transaction touches together must share a hash slot."""
        return self.target.is_cluster

    def client(self, options: ClientOptions = SHARED) -> RedisClient:
        """A new client (with its own connection pool) for one user of Redis."""
        client = self._make(options)
        self._clients.append(client)
        return client

    async def aclose(self) -> None:
        """Close every client made here (and the connections to the sentinels)."""
        clients, self._clients = self._clients, []
        for client in clients:
            await client.aclose()
        if self._sentinel is not None:
            for sentinel in self._sentinel.sentinels:
                await sentinel.aclose()
            self._sentinel = None

    def _make(self, options: ClientOptions) -> RedisClient:
        target = self.target
        kwargs = options.redis_kwargs()
        if target.kind == "server":
            return aioredis.Redis.from_url(target.url, **kwargs)
        if target.tls:
            kwargs["ssl"] = True
        if target.kind == "cluster":
            nodes = [ClusterNode(host, port) for host, port in target.nodes]
            return RedisCluster(
                startup_nodes=nodes, username=target.username, password=target.password, **kwargs
            )
        return self._sentinels().master_for(
            str(target.service),
            db=target.db,
            username=target.username,
            password=target.password,
            **kwargs,
        )

    def _sentinels(self) -> Sentinel:
        # One Sentinel object for every client: its connections to the
        # sentinels are shared, and closed once in `aclose`.
        if self._sentinel is None:
            timeouts = {
                "socket_timeout": SENTINEL_TIMEOUT_S,
                "socket_connect_timeout": SENTINEL_TIMEOUT_S,
            }
            if self.target.tls:
                timeouts["ssl"] = True
            self._sentinel = Sentinel(list(self.target.nodes), sentinel_kwargs=timeouts)
        return self._sentinel


def _host_port(item: str, url: str) -> tuple[str, int]:
    host, _, port = item.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"REDIS_URL: {item!r} is not HOST:PORT in {_redacted(url)!r}")
    return host.strip("[]"), int(port)


def _redacted(url: str) -> str:
    """The URL without its password (error messages end up in logs)."""
    head, sep, tail = url.rpartition("@")
    if not sep:
        return url
    scheme, _, credentials = head.partition("://")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{tail}" if ":" in credentials else url
