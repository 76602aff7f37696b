"""The `leadstream` command as a user runs it: serve, token, chat, seed."""

from __future__ import annotations

import signal
import socket
import stat

import aiohttp
from support import ServerProcess, bearer

from leadstream.server.config import Settings

QUEUED = 600


async def test_serve_token_chat_seed(tmp_path):
    env = {"LEADSTREAM_PEOPLE": "5000", "LEADSTREAM_LOG_LEVEL": "WARNING"}
    for name in ("LEADSTREAM_STORE", "LEADSTREAM_SECRET", "LEADSTREAM_DATA_DIR", "REDIS_URL"):
        env[name] = ""
    async with ServerProcess(tmp_path / "home", env) as server:
        data = tmp_path / "home" / "data"
        assert (data / "leadstream.db").exists()
        assert (data / "secret").exists()
        # Other local users can read nothing: the folder and what is in it are the owner's.
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        for path in data.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
        # Not on a terminal (a container's log collector): no token in the output.
        printed = server.log_path.read_text()
        assert "leadstream token --org demo" in printed and "?token=ey" not in printed

        issued = server.cli("token", "--org", "acme", "--user", "alice")
        assert issued.returncode == 0, issued.stderr
        token = issued.stdout.strip()
        async with aiohttp.ClientSession() as http:
            info = await (await http.get(server.url + "/api/info")).json()
            assert info["protocol"] == 2 and info["store"] == "sqlite" and info["redis"] is False
            assert info["model"].startswith("offline-planner")
            leads = await http.get(server.url + "/api/leads", headers=bearer(token))
            assert leads.status == 200
            page = await http.get(server.url + "/")
            assert page.status == 200 and "socket.io.min.js" in await page.text()

        chat = server.cli(
            "chat", "Find 10 CTOs with phone numbers", "--url", server.url, "--token", token
        )
        assert chat.returncode == 0, chat.stderr
        assert "> search_leads" in chat.stdout and "I found 10 leads" in chat.stdout
        assert "10/10 leads" in chat.stdout

        exported = server.cli(
            "chat", "find 5 CFOs and save them and export to csv", "--url", server.url
        )
        assert exported.returncode == 0, exported.stderr
        assert "CSV ready (5 rows): " + server.url + "/api/exports/" in exported.stdout

        refused = server.cli("chat", "hello", "--url", server.url, "--token", "forged")
        assert refused.returncode == 1 and "could not connect" in refused.stdout

        seeded = server.cli("seed", "--people", "6000")
        assert seeded.returncode == 0, seeded.stderr
        assert "6,000 people (1,000 added" in seeded.stdout
        again = server.cli("seed", "--people", "6000")
        assert "(0 added" in again.stdout


def test_bad_configuration_is_reported(tmp_path):
    server = ServerProcess(tmp_path, {"LEADSTREAM_AUTH": "nobody", "LEADSTREAM_STORE": ""})
    result = server.cli("token", "--org", "a", "--user", "b")
    assert result.returncode == 2 and "LEADSTREAM_AUTH" in result.stderr
    bad_ident = ServerProcess(tmp_path, {"LEADSTREAM_AUTH": "", "LEADSTREAM_STORE": ""}).cli(
        "token", "--org", "a:b", "--user", "b"
    )
    assert bad_ident.returncode == 2 and "org must be" in bad_ident.stderr
    # Logging settings come through the one settings object, checked before any work.
    yaml_logs = ServerProcess(tmp_path, {"LEADSTREAM_LOG_FORMAT": "yaml", "LEADSTREAM_STORE": ""})
    result = yaml_logs.cli("token", "--org", "a", "--user", "b")
    assert result.returncode == 2 and "LEADSTREAM_LOG_FORMAT" in result.stderr


def test_logging_and_client_settings_are_read_once_into_settings():
    settings = Settings.from_env(
        {"LEADSTREAM_LOG_LEVEL": "DEBUG", "LEADSTREAM_LOG_FORMAT": "text", "LEADSTREAM_TOKEN": "t"}
    )
    assert (settings.log_level, settings.log_format, settings.client_token) == (
        "DEBUG",
        "text",
        "t",
    )
    defaults = Settings.from_env({})
    assert (defaults.log_level, defaults.log_format, defaults.client_token) == ("INFO", "", None)


def test_short_secrets_are_refused(tmp_path):
    short = ServerProcess(tmp_path, {"LEADSTREAM_SECRET": "a", "LEADSTREAM_STORE": ""})
    result = short.cli("token", "--org", "a", "--user", "b")
    assert result.returncode == 2 and "at least 32 bytes" in result.stderr
    (tmp_path / "data").mkdir(mode=0o700)
    (tmp_path / "data" / "secret").write_text("short")
    from_file = ServerProcess(tmp_path, {"LEADSTREAM_SECRET": "", "LEADSTREAM_STORE": ""})
    result = from_file.cli("token", "--org", "a", "--user", "b")
    assert result.returncode == 2 and "shorter than 32 bytes" in result.stderr


async def test_connections_wait_in_the_listen_queue_while_the_loop_is_busy(tmp_path):
    """A reconnect storm arrives faster than one loop accepts: `serve`'s
    listen queue (LISTEN_BACKLOG) holds the connections instead of dropping
    their SYNs, which clients retry only after 1 s, then 3 s."""
    async with ServerProcess(tmp_path, {"LEADSTREAM_PEOPLE": "0"}) as server:
        assert server.process is not None
        server.process.send_signal(signal.SIGSTOP)  # a loop too busy to accept
        opened: list[socket.socket] = []
        try:
            for _ in range(QUEUED):
                conn = socket.socket()
                conn.settimeout(0.5)
                try:
                    conn.connect(("127.0.0.1", server.port))  # the kernel's handshake
                except TimeoutError:
                    conn.close()
                    break
                opened.append(conn)
        finally:
            server.process.send_signal(signal.SIGCONT)
        for conn in opened:
            conn.close()
        # aiohttp's default queue of 128 stops at 129.
        assert len(opened) == QUEUED
        async with (
            aiohttp.ClientSession() as http,
            http.get(server.url + "/healthz") as response,
        ):
            assert response.status == 200
