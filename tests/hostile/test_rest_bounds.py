"""REST bounds under attack: body sizes, odd paths and parameters, proxy
headers, readiness floods and DNS rebinding (issue 10, items 2, 11, 12, 15, 18)."""

from __future__ import annotations

import asyncio
import base64
import json

import aiohttp
from hostile_support import Target
from multidict import CIMultiDict


async def test_large_json_bodies_are_refused_before_they_are_read(target: Target) -> None:
    """A 10 MB `[{},{},...]` used to cost +320 MB; now 413 at 256 KB, memory flat."""
    huge = b"[" + b"{}," * (10 * 1024 * 1024 // 3) + b"{}]"

    async def chunked() -> object:  # no Content-Length: the limit must hold while streaming
        for start in range(0, len(huge), 65536):
            yield huge[start : start + 65536]

    async with aiohttp.ClientSession() as http:
        lead = await target.store_victim_lead(http)
        before = target.rss()
        async with target.probe() as probe:
            for _ in range(3):
                for body in (huge, chunked()):
                    async with http.post(
                        target.url + "/api/leads",
                        data=body,
                        headers={**target.headers("attacker"), "Content-Type": "application/json"},
                    ) as response:
                        assert response.status == 413
                        error = (await response.json())["error"]
                        assert error["code"] == "payload_too_large"
                        assert error["details"]["maxBytes"] == 256 * 1024
            # Within the limit but invalid item by item: the answer names only a few.
            many = {"name": "x", "emails": ["not an email"] * 12_000}
            async with http.post(
                target.url + "/api/leads", json=many, headers=target.headers("attacker")
            ) as response:
                assert response.status == 422
                assert len((await response.json())["error"]["details"]["fields"]) <= 20
        probe.assert_healthy()
        growth = target.rss() - before
        assert growth < 30 * 1024 * 1024, f"memory grew by {growth / 1e6:.0f} MB (bound 30 MB)"
        await target.assert_still_there(http, lead)


async def test_odd_paths_and_parameters_answer_4xx_not_500(target: Target) -> None:
    async with aiohttp.ClientSession() as http:
        # Any path ending in /download used to skip auth, then fail without a caller.
        async with http.get(target.url + "/api/leads/download?signature=x") as response:
            assert response.status == 401
            assert (await response.json())["error"]["code"] == "unauthorized"
        # A non-ASCII signature used to raise in hmac.compare_digest.
        async with http.get(
            target.url + "/api/exports/job_x/download",
            params={"expires": "99999999999", "signature": "é" * 64},
        ) as response:
            assert response.status == 403
        # A cursor whose key does not fit a 64-bit integer used to overflow SQLite.
        for key in (2**64 - 1, 2**63, "x" * 5000):
            cursor = base64.urlsafe_b64encode(json.dumps(["createdAt:desc", key, "id"]).encode())
            async with http.get(
                target.url + "/api/leads",
                params={"cursor": cursor.decode().rstrip("=")},
                headers=target.headers(),
            ) as response:
                assert response.status == 400, await response.text()
                assert (await response.json())["error"]["code"] == "invalid_cursor"


async def test_forwarded_for_on_several_lines_is_read_from_the_proxy_line(start_target) -> None:
    """Only the last entries, which the trusted proxy appended, decide the client's
    address; a client that sends its own X-Forwarded-For line cannot rotate it."""
    target: Target = await start_target(
        LEADSTREAM_TRUSTED_PROXY_HOPS="1", LEADSTREAM_RATE_ANONYMOUS_IP="5/1m"
    )
    async with aiohttp.ClientSession() as http:
        statuses = []
        for n in range(8):  # 5 a minute from one client, whatever its first line says
            headers = [("X-Forwarded-For", f"198.51.100.{n}"), ("X-Forwarded-For", "203.0.113.9")]
            async with http.get(target.url + "/api/info", headers=CIMultiDict(headers)) as response:
                statuses.append(response.status)
        assert statuses.count(429) >= 2, statuses


async def test_readiness_says_ok_or_failed_and_survives_a_flood(start_target) -> None:
    target: Target = await start_target()
    async with aiohttp.ClientSession() as http:
        async with target.probe() as probe:
            bodies = []
            for _ in range(10):  # 300 probes in waves of 30: each wave costs one check a part
                answers = await asyncio.gather(
                    *(http.get(target.url + "/readyz") for _ in range(30))
                )
                bodies += [await a.json() for a in answers]
        probe.assert_healthy()
        assert all(b == {"status": "ok", "checks": {"store": "ok"}} for b in bodies)


async def test_dev_tokens_only_for_hosts_rebinding_cannot_fake(start_target) -> None:
    target: Target = await start_target(LEADSTREAM_AUTH="dev")
    body = {"org": "demo", "user": "u"}
    async with aiohttp.ClientSession() as http:
        for host, status in (
            ("evil.example", 403),
            ("evil.example:8080", 403),
            ("localhost:1", 200),
            ("127.0.0.1", 200),
            ("[::1]:8080", 200),
            ("app.localhost", 200),
        ):
            async with http.post(
                target.url + "/api/dev/token", json=body, headers={"Host": host}
            ) as response:
                assert response.status == status, (host, await response.text())
