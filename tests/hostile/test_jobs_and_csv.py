"""Jobs and CSV under attack: very wide and very long CSV rows, export floods
and export files filling the disk (issue 10, items 8, 9 and 16)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from hostile_support import Target

GOOD_ROWS = 200


def good_rows(start: int = 0, count: int = GOOD_ROWS) -> str:
    return "".join(f"Person {i},p{i}@example.com\n" for i in range(start, start + count))


async def _import(http: aiohttp.ClientSession, target: Target, body: bytes, org: str) -> dict:
    """Upload `body` as a CSV import of `org` and wait for its job to settle."""
    headers = {**target.headers(org), "Content-Type": "text/csv"}
    async with http.post(target.url + "/api/leads/import", data=body, headers=headers) as r:
        assert r.status == 202, await r.text()
        job_id = (await r.json())["jobId"]
    return await _settled(http, target, job_id, org)


async def _settled(
    http: aiohttp.ClientSession, target: Target, job_id: str, org: str, user: str = "alice"
) -> dict:
    async with asyncio.timeout(60):
        while True:
            url = f"{target.url}/api/jobs/{job_id}"
            async with http.get(url, headers=target.headers(org, user)) as r:
                assert r.status == 200, await r.text()
                job = await r.json()
            if job["status"] in ("done", "failed"):
                return job
            await asyncio.sleep(0.1)


async def _total(http: aiohttp.ClientSession, target: Target, org: str) -> int:
    async with http.get(target.url + "/api/leads/stats", headers=target.headers(org)) as r:
        return (await r.json())["total"]


def _export_bytes(target: Target) -> dict[str, int]:
    """Bytes of export files on disk, per org folder."""
    folder = Path(target.server.env["LEADSTREAM_DATA_DIR"]) / "exports"
    if not folder.exists():
        return {}
    return {
        org.name: sum(f.stat().st_size for f in org.iterdir())
        for org in folder.iterdir()
        if org.is_dir()
    }


async def test_very_wide_and_very_long_csv_rows_are_skipped_not_held(target: Target) -> None:
    """One 10 MB line of 3.5 M cells used to cost +257 MB per import job; now
    lines past 64 KB are read in pieces, skipped and reported by line."""
    wide = "ab," * 3_500_000  # 10.5 MB, 3.5 M cells, one line
    async with aiohttp.ClientSession() as http:
        kept = await _import(http, target, ("name,email\n" + good_rows()).encode(), "victim")
        assert kept["result"]["saved"] == GOOD_ROWS
        await _total(http, target, "victim")
        before = target.rss()
        async with target.probe() as probe:
            single = await _import(http, target, f"name,email\n{wide}\n".encode(), "attacker")
            mixed = (
                "name,email\n" + good_rows(0, 100) + "x" * 2_000_000 + "\n" + good_rows(100, 100)
            )
            among = await _import(http, target, mixed.encode(), "attacker")
            extra = "name,email\n" + good_rows(0, 5) + "Wide,w@example.com," + "x," * 1000 + "\n"
            extra_cells = await _import(http, target, extra.encode(), "attacker")
        probe.assert_healthy()
        growth = target.rss() - before
        assert growth < 40 * 1024 * 1024, f"memory grew by {growth / 1e6:.0f} MB (bound 40 MB)"

        long_line = "line longer than 65,536 characters; skipped"
        assert single["status"] == "done"
        assert single["result"]["errors"] == [{"line": 2, "message": long_line}]
        assert among["status"] == "done" and among["result"]["saved"] == 200
        assert among["result"]["errors"] == [{"line": 102, "message": long_line}]
        assert extra_cells["status"] == "done" and extra_cells["result"]["saved"] == 0
        assert extra_cells["result"]["updated"] == 5  # the same 5 people as above
        assert extra_cells["result"]["errors"] == [
            {"line": 7, "message": "the row has 1003 cells, the header 2 columns"}
        ]
        assert await _total(http, target, "victim") == GOOD_ROWS  # nothing stored lost


async def test_an_export_flood_gets_at_most_jobs_per_user(start_target, redis_server) -> None:
    """30 `POST /api/exports` at once used to queue 30 jobs (57 MB of files).
    No worker takes jobs here (Redis queue, `SERVE_WORKERS=0`), so what is
    accepted stays queued: exactly the limit, whatever the timing. Request
    rate limits are off so that the job limit alone answers."""
    target: Target = await start_target(
        REDIS_URL=redis_server.url, LEADSTREAM_SERVE_WORKERS="0", LEADSTREAM_RATE_LIMITS="off"
    )
    async with aiohttp.ClientSession() as http:
        async with http.post(
            target.url + "/api/leads", json={"name": "Ada"}, headers=target.headers()
        ) as r:
            assert r.status == 201
        before = target.rss()

        async def export(user: str) -> tuple[int, dict]:
            async with http.post(
                target.url + "/api/exports", json={}, headers=target.headers("victim", user)
            ) as r:
                return r.status, await r.json()

        async with target.probe() as probe:
            answers = await asyncio.gather(*(export("mallory") for _ in range(30)))
            for _ in range(5):  # and again: nothing more gets in
                again = await asyncio.gather(*(export("mallory") for _ in range(30)))
                assert {status for status, _ in again} == {429}
            other_user = await export("alice")
            others = await asyncio.gather(*(export(f"user{i}") for i in range(3)))
        probe.assert_healthy()
        growth = target.rss() - before
        assert growth < 20 * 1024 * 1024, f"memory grew by {growth / 1e6:.0f} MB (bound 20 MB)"

        accepted = [body for status, body in answers if status == 202]
        refused = [body for status, body in answers if status == 429]
        assert len(accepted) == 3 and len(refused) == 27
        assert {body["error"]["code"] for body in refused} == {"too_many_jobs"}
        assert all("3 exports or imports" in body["error"]["message"] for body in refused)
        assert other_user[0] == 202  # other users of the same org still export
        assert [status for status, _ in others] == [202, 202, 202]
        async with http.get(target.url + "/api/leads", headers=target.headers()) as r:
            assert [lead["name"] for lead in (await r.json())["leads"]] == ["Ada"]


async def test_export_files_never_pass_the_org_quota(start_target) -> None:
    """Exports stop, and are refused, at `LEADSTREAM_EXPORT_QUOTA_BYTES`;
    every refusal names the code and when space frees up. Request rate
    limits are off so that the quota alone answers."""
    quota = 64 * 1024
    target: Target = await start_target(
        LEADSTREAM_EXPORT_QUOTA_BYTES=str(quota), LEADSTREAM_RATE_LIMITS="off"
    )
    async with aiohttp.ClientSession() as http:
        body = ("name,email\n" + good_rows(0, 1000)).encode()  # exports to about 80 KB
        assert (await _import(http, target, body, "victim"))["result"]["saved"] == 1000
        small = ("name,email\n" + good_rows(0, 10)).encode()
        assert (await _import(http, target, small, "bystander"))["result"]["saved"] == 10
        before = target.rss()

        async def export(user: str, filter: dict) -> tuple[str, int, dict]:
            async with http.post(
                target.url + "/api/exports",
                json={"filter": filter},
                headers=target.headers("victim", user),
            ) as r:
                return user, r.status, await r.json()

        async with target.probe() as probe:
            # Ten users, three exports each: the whole list, and two halves.
            wanted = [(f"user{i}", f) for i in range(10) for f in ({}, {"q": "Person 1"}, {})]
            answers = await asyncio.gather(*(export(user, f) for user, f in wanted))
            jobs = [
                await _settled(http, target, body["jobId"], "victim", user)
                for user, status, body in answers
                if status == 202
            ]
            async with http.post(
                target.url + "/api/exports", json={}, headers=target.headers("bystander")
            ) as r:
                assert r.status == 202
                bystander = await _settled(http, target, (await r.json())["jobId"], "bystander")
        probe.assert_healthy()
        growth = target.rss() - before
        assert growth < 40 * 1024 * 1024, f"memory grew by {growth / 1e6:.0f} MB (bound 40 MB)"

        assert {status for _, status, _ in answers} <= {202, 409}
        for _, status, body in answers:
            if status == 409:
                assert body["error"]["code"] == "export_quota_exceeded"
                assert "frees up in about" in body["error"]["message"]
        failed = [job for job in jobs if job["status"] == "failed"]
        assert failed, "the whole list does not fit the quota: some exports must stop"
        for job in failed:
            assert job["error"]["code"] == "export_quota_exceeded"
            assert "frees up in about" in job["error"]["message"]
            assert "Error" not in job["error"]["message"]  # plain words, no exception text
        assert all(size <= quota for size in _export_bytes(target).values())
        assert bystander["status"] == "done" and bystander["result"]["rows"] == 10
        assert await _total(http, target, "victim") == 1000  # nothing stored lost
