"""What the hostile tests attack and measure with: the target server, a
probe that times `/healthz` during an attack, and the server's memory.

Each test states its bound: `/healthz` answers within `HEALTH_BUDGET_S`
during the attack, the server's memory grows by less than a stated amount,
other orgs keep working, and nothing already stored is lost.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
from support import ServerProcess

from leadstream.server.auth import TokenSigner

SECRET = "hostile-secret-" + "x" * 40
# Every attack must leave the liveness probe answering this fast.
HEALTH_BUDGET_S = 0.1
MIN_SAMPLES = 5


class HealthProbe:
    """Asks `/healthz` every `every_s` while an attack runs; `worst_s` is the
    slowest answer (a request that failed counts as infinitely slow)."""

    def __init__(self, http: aiohttp.ClientSession, url: str, every_s: float = 0.02) -> None:
        self._http = http
        self._url = url + "/healthz"
        self._every_s = every_s
        self._task: asyncio.Task[None] | None = None
        self.samples: list[float] = []

    @property
    def worst_s(self) -> float:
        return max(self.samples, default=0.0)

    async def __aenter__(self) -> HealthProbe:
        async with self._http.get(self._url) as response:  # warm: connection made, not counted
            assert response.status == 200
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        # A short attack still gets a few probes timed (some during its aftermath).
        while len(self.samples) < MIN_SAMPLES and not self._task.done():
            await asyncio.sleep(self._every_s)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def assert_healthy(self) -> None:
        assert len(self.samples) >= 3, f"the probe got too few answers: {self.samples}"
        assert self.worst_s < HEALTH_BUDGET_S, (
            f"/healthz took {self.worst_s * 1000:.0f} ms during the attack "
            f"(bound {HEALTH_BUDGET_S * 1000:.0f} ms)"
        )

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=5)
        while True:
            started = time.perf_counter()
            try:
                async with self._http.get(self._url, timeout=timeout) as response:
                    await response.read()
                    ok = response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            self.samples.append(time.perf_counter() - started if ok else float("inf"))
            await asyncio.sleep(self._every_s)


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


class Target:
    """The attacked server: its URL, tokens for any org, and its memory."""

    def __init__(self, server: ServerProcess, signer: TokenSigner) -> None:
        self.server = server
        self.url = server.url
        self.signer = signer

    def token(self, org: str = "victim", user: str = "alice", ttl: int | None = None) -> str:
        return self.signer.issue(org, user, ttl).token

    def headers(self, org: str = "victim", user: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(org, user)}"}

    def rss(self) -> int:
        assert self.server.process is not None
        return rss_bytes(self.server.process.pid)

    def probe(self, http: aiohttp.ClientSession) -> HealthProbe:
        return HealthProbe(http, self.url)


def hostile_env(data: Path, **overrides: str) -> dict[str, str]:
    """The embedded defaults, in a folder of the test's own, with a known secret."""
    return {
        "LEADSTREAM_DATA_DIR": str(data),
        "LEADSTREAM_STORE": f"sqlite:///{data}/leadstream.db",
        "LEADSTREAM_SECRET": SECRET,
        "LEADSTREAM_LOG_FORMAT": "text",
        "LEADSTREAM_LOG_LEVEL": "WARNING",
        "OPENAI_API_KEY": "",
        "ROCKETREACH_API_KEY": "",
        "REDIS_URL": "",
        **overrides,
    }
