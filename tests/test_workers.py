"""`leadstream serve --workers N`: N processes on one port, joined by Redis."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp
import socketio
from support import EventLog, ServerProcess, bearer, connect_client

from leadstream.server.auth import TokenSigner

CLIENTS = 24  # all on one worker by chance: 2 in 2**24


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def established(pid: int, port: int, state: str = "01") -> int:
    """TCP sockets of process `pid` on local port `port` in `state` (01: a
    client's connection, 0A: listening)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        if local_port == port and fields[3] == state and fields[9] in inodes:
            count += 1
    return count


async def test_two_workers_share_the_port_and_each_others_changes(tmp_path, redis_server):
    env = {
        "REDIS_URL": redis_server.url,
        "LEADSTREAM_PEOPLE": "0",
        "LEADSTREAM_LOG_LEVEL": "WARNING",
        "LEADSTREAM_STORE": "",
        "LEADSTREAM_SECRET": "",
        "LEADSTREAM_DATA_DIR": "",
        "LEADSTREAM_RATE_LIMITS": "off",
    }
    server = ServerProcess(tmp_path / "home", env, args=("--workers", "2"))
    clients: list[socketio.AsyncClient] = []
    try:
        async with server:
            assert server.process is not None
            workers = children(server.process.pid)
            assert len(workers) == 2
            async with asyncio.timeout(60):  # /readyz answered: one worker is up, maybe not both
                while not all(established(pid, server.port, "0A") for pid in workers):
                    await asyncio.sleep(0.1)
            secret = (tmp_path / "home" / "data" / "secret").read_text().strip()
            signer = TokenSigner(secret, default_ttl_s=600)
            token = signer.issue("acme", "writer").token
            logs = []
            for n in range(CLIENTS):
                user = signer.issue("acme", f"u{n}").token
                client = await connect_client(server.url, {"token": user}, ["leads:changes"])
                clients.append(client.sio)
                ack = await client.sio.call("leads:subscribe", {}, timeout=20)
                assert ack["ok"], ack
                logs.append(client.log)
            # The kernel spread the sockets over both workers.
            held = [established(pid, server.port) for pid in workers]
            assert all(count > 0 for count in held), held
            assert sum(held) >= CLIENTS

            names = [f"Worker Lead {n}" for n in range(6)]
            for name in names:  # a new connection each: any worker takes the write
                connector = aiohttp.TCPConnector(force_close=True)
                async with aiohttp.ClientSession(connector=connector) as http:
                    created = await http.post(
                        server.url + "/api/leads", json={"name": name}, headers=bearer(token)
                    )
                    assert created.status == 201, await created.text()

            def has_all(log: EventLog) -> bool:
                seen = {c["lead"]["name"] for e in log.of("leads:changes") for c in e["changes"]}
                return seen >= set(names)

            # Every client, on either worker, sees every change, whichever worker wrote it.
            async with asyncio.timeout(20):
                while not all(has_all(log) for log in logs):
                    await asyncio.sleep(0.05)
            for sio in clients:
                await sio.disconnect()
            clients.clear()
        # Stopping the parent stops its workers.
        for pid in workers:
            assert _gone(pid), pid
    finally:
        for sio in clients:
            await sio.disconnect()


def _gone(pid: int) -> bool:
    """Exited (a zombie not yet reaped counts)."""
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_workers_need_redis(tmp_path):
    server = ServerProcess(tmp_path, {"REDIS_URL": "", "LEADSTREAM_STORE": ""})
    result = server.cli("serve", "--workers", "2", "--port", str(server.port))
    assert result.returncode == 2
    assert "--workers needs REDIS_URL" in result.stderr
