"""`leadstream loadtest` against a real `leadstream serve`: a small run whose
table must add up (every socket connected, every change delivered)."""

from __future__ import annotations

import asyncio
import math
import os
import re
import time

import aiohttp
import pytest
from support import ServerProcess, bearer, eventually

from leadstream.server.cli.feed_socket import STAMP, FeedSocket, Tally
from leadstream.server.cli.loadtest import ClientPool, _gc_delta, percentile

SOCKETS = 200
PER_ORG = 100


def table_row(output: str) -> dict[str, str]:
    lines = [line for line in output.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    row = [cell.strip() for cell in lines[-1].strip("|").split("|")]
    return dict(zip(header, row, strict=True))


def number(cell: str) -> float:
    return float(cell.split()[0].replace(",", "").rstrip("%"))


async def test_a_small_load_test_adds_up(tmp_path):
    env = {
        "LEADSTREAM_PEOPLE": "0",
        "LEADSTREAM_LOG_LEVEL": "WARNING",
        "LEADSTREAM_STORE": "",
        "LEADSTREAM_SECRET": "",
        "LEADSTREAM_DATA_DIR": "",
        "REDIS_URL": "",
    }
    # The server keeps its default limits: the load test stays inside them.
    async with ServerProcess(tmp_path / "home", env) as server:
        assert server.process is not None
        result = server.cli(
            "loadtest",
            "--url",
            server.url,
            "--sockets",
            str(SOCKETS),
            "--seconds",
            "4",
            "--rate",
            "2",
            "--per-org",
            str(PER_ORG),
            "--server-pid",
            str(server.process.pid),
            "--drop",
        )
        assert result.returncode == 0, result.stderr
        assert "did not connect" not in result.stdout, result.stdout
        row = table_row(result.stdout)
        orgs = math.ceil(SOCKETS / PER_ORG)
        assert number(row["sockets"]) == SOCKETS
        assert number(row["connected"]) == SOCKETS
        assert number(row["orgs"]) == orgs
        assert number(row["changes"]) == 2 * 4 * orgs  # rate x seconds x orgs, none failed
        assert number(row["deliveries"]) == number(row["changes"]) * PER_ORG
        assert number(row["lost"]) == 0
        assert 0 < number(row["p50 ms"]) <= number(row["p99 ms"]) <= number(row["max ms"])
        assert number(row["server KB/socket"]) > 0
        assert row["server CPU"].endswith("%")
        assert number(row["load generator CPU"]) > 0  # its client processes are counted
        assert number(row["CPU µs/delivery"]) > 0
        assert row["longest GC"] != "-"  # read from the server's /metrics
        # --drop: the clients were killed at once and the server let go of every socket.
        dropped = re.search(
            r"all ([\d,]+) sockets dropped at once: released in ([\d.]+) s; "
            r"slowest /healthz meanwhile (\d+) ms \((\d+) asked\)",
            result.stdout,
        )
        assert dropped, result.stdout
        assert int(dropped[1].replace(",", "")) == SOCKETS
        assert float(dropped[2]) < 120
        async with aiohttp.ClientSession() as http, http.get(server.url + "/metrics") as r:
            metrics = await r.text()
        assert "leadstream_sockets_connected 0.0" in metrics


def test_bad_arguments_and_unreachable_servers(tmp_path):
    server = ServerProcess(tmp_path, {"LEADSTREAM_STORE": "", "LEADSTREAM_SECRET": "s" * 40})
    bad = server.cli("loadtest", "--sockets", "many")
    assert bad.returncode == 2 and "--sockets takes socket counts" in bad.stderr
    blind = server.cli("loadtest", "--drop")
    assert blind.returncode == 2 and "--drop needs --server-pid" in blind.stderr
    window = server.cli("loadtest", "--deflate", "20")
    assert window.returncode == 2 and "9 to 15 bits" in window.stderr
    greedy = server.cli("loadtest", "--client-nice", "-5")
    assert greedy.returncode == 2 and "0 to 19" in greedy.stderr
    gone = server.cli("loadtest", "--url", "http://127.0.0.1:9", "--sockets", "10")
    assert gone.returncode == 1 and "cannot reach http://127.0.0.1:9" in gone.stderr


async def test_client_processes_run_at_the_nice_value_given():
    pool = ClientPool(2, "http://127.0.0.1:9", 0, nice=7)
    try:
        mine = os.getpriority(os.PRIO_PROCESS, 0)

        async def niced() -> bool:
            return all(
                os.getpriority(os.PRIO_PROCESS, proc.pid or 0) == min(mine + 7, 19)
                for proc in pool.procs
            )

        await eventually(niced)
    finally:
        pool.kill()
    assert not any(proc.is_alive() for proc in pool.procs)


def test_gc_figures_from_two_scrapes():
    before = {0.001: 10.0, 0.05: 12.0, 0.1: 12.0, math.inf: 12.0}
    after = {0.001: 30.0, 0.05: 33.0, 0.1: 34.0, math.inf: 34.0}
    assert _gc_delta(before, after) == (0.1, 1)  # one new pause in (50 ms, 100 ms]
    assert _gc_delta(after, after) == (0.0, 0)
    assert _gc_delta(after, before) is None  # another worker answered the second scrape
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.99) == 4.0


@pytest.mark.parametrize("compression", ["0", "1"])
async def test_the_load_test_socket_counts_each_change_once_with_its_latency(tmp_path, compression):
    """The raw-websocket client (`FeedSocket`) against a real server: with
    compression on, the server deflates its frames and the client inflates
    them; a change whose title is not the run's is not counted."""
    env = {"LEADSTREAM_PEOPLE": "0", "LEADSTREAM_WS_COMPRESSION": compression}
    async with ServerProcess(tmp_path, env) as server:
        token = server.token("acme", "alice")
        tally = Tally()
        socket = FeedSocket("acme", tally, deflate=15)
        await socket.open("127.0.0.1", server.port, token, None)
        assert socket.compressed is (compression == "1")
        tally.run = "r1"
        async with aiohttp.ClientSession(headers=bearer(token)) as http:
            async with http.post(server.url + "/api/leads", json={"name": "Ada"}) as created:
                lead = await created.json()
            for seq in range(3):
                title = f"{STAMP} r1 {seq} {time.time():.6f}"
                async with http.patch(
                    f"{server.url}/api/leads/{lead['id']}", json={"title": title}
                ) as response:
                    assert response.status == 200

            async def all_three() -> bool:
                return socket.received == 3

            await eventually(all_three)
            async with http.patch(
                f"{server.url}/api/leads/{lead['id']}", json={"title": "not ours"}
            ) as response:
                assert response.status == 200
            await asyncio.sleep(0.3)
        assert socket.received == 3 and len(tally.latencies) == 3
        assert all(0 <= latency < 5 for latency in tally.latencies)
        assert not socket.closed
        socket.close()
        assert socket.closed
