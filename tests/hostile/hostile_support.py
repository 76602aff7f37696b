"""What the hostile tests attack and measure with: the target server, a
probe that times `/healthz` during an attack, and the server's memory.

Each test states its bound: `/healthz` answers within `HEALTH_BUDGET_S`
during the attack, the server's memory grows by less than a stated amount,
other orgs keep working, and nothing already stored is lost.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from support import ServerProcess, rss_kb, serve_env

from leadstream.server.auth import TokenSigner

SECRET = "hostile-secret-" + "x" * 40
# Every attack must leave the liveness probe answering this fast.
HEALTH_BUDGET_S = 0.1
MIN_SAMPLES = 5
# What the victim org has stored before an attack, to check nothing is lost.
VICTIM_LEAD = {
    "name": "Ada Lovelace",
    "company": "Analytical",
    "emails": ["ada@analytical.example"],
}
PROBE_SCRIPT = Path(__file__).with_name("health_probe.py")


class HealthProbe:
    """Asks `/healthz` every `every_s` while an attack runs, from a process of
    its own (`health_probe.py`: the test's event loop and collector, busy with
    the attack, must not be taken for the server's delay); `worst_s` is the
    slowest answer (a request that failed counts as infinitely slow).

    Usable as `async with` (`probe.samples` fill as answers arrive)."""

    def __init__(self, url: str, every_s: float = 0.02) -> None:
        parts = urlsplit(url)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self._every_s = every_s
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self.samples: list[float] = []

    @property
    def worst_s(self) -> float:
        return max(self.samples, default=0.0)

    async def __aenter__(self) -> HealthProbe:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(PROBE_SCRIPT),
            self._host,
            str(self._port),
            str(self._every_s),
            stdout=asyncio.subprocess.PIPE,
        )
        assert self._process.stdout is not None
        first = await asyncio.wait_for(self._process.stdout.readline(), timeout=10)
        assert float(first) != float("inf"), "the server did not answer /healthz before the attack"
        self._reader = asyncio.create_task(self._read(self._process.stdout))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._process is not None and self._reader is not None
        # A short attack still gets a few probes timed (some during its aftermath).
        while len(self.samples) < MIN_SAMPLES and not self._reader.done():
            await asyncio.sleep(self._every_s)
        self._process.terminate()
        await self._process.wait()
        await asyncio.gather(self._reader, return_exceptions=True)

    def assert_healthy(self) -> None:
        assert len(self.samples) >= 3, f"the probe got too few answers: {self.samples}"
        assert self.worst_s < HEALTH_BUDGET_S, (
            f"/healthz took {self.worst_s * 1000:.0f} ms during the attack "
            f"(bound {HEALTH_BUDGET_S * 1000:.0f} ms)"
        )

    async def _read(self, stdout: asyncio.StreamReader) -> None:
        while line := await stdout.readline():
            self.samples.append(float(line))


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
        return rss_kb(self.server.pid) * 1024

    async def store_victim_lead(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        """Store `VICTIM_LEAD` in org `victim` before an attack; the lead as answered."""
        async with http.post(
            self.url + "/api/leads", json=VICTIM_LEAD, headers=self.headers()
        ) as r:
            assert r.status == 201, await r.text()
            return await r.json()

    async def assert_still_there(self, http: aiohttp.ClientSession, lead: dict[str, Any]) -> None:
        """Nothing already stored was lost: the victim's lead reads back whole."""
        async with http.get(f"{self.url}/api/leads/{lead['id']}", headers=self.headers()) as r:
            assert r.status == 200 and (await r.json())["name"] == VICTIM_LEAD["name"]

    def probe(self) -> HealthProbe:
        """A `/healthz` probe of this server (in a process of its own)."""
        return HealthProbe(self.url)


def hostile_env(data: Path, **overrides: str) -> dict[str, str]:
    """The embedded defaults, in a folder of the test's own, with a known secret."""
    return serve_env(data, SECRET, **overrides)
