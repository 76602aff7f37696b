"""The baseline of `bench/realtime_bench.py`: bare python-socketio.

An `AsyncServer` on aiohttp with `AsyncRedisManager` (several of these
processes share one Redis, as `leadstream serve` instances do), library
defaults everywhere (stdlib json, no auth, no session, no limits). It does
only what the benchmark needs to make it emit what our server emits:

- `leads:subscribe` (acknowledged) puts the connection in the org room
  `org:bench`, as our server's subscribe does;
- `POST /emit {"event"?, "payloads": [...]}` emits each payload in order to
  that room (`event` defaults to `leads:changes`), one `sio.emit` each, and
  answers when python-socketio has handed them all out on this instance and
  published them to the others;
- `GET /healthz` answers 200 once the server listens.

Run: python bench/realtime_baseline_server.py --port 9000 --redis redis://127.0.0.1:6379/0
(the benchmark starts and stops these processes itself).
"""

from __future__ import annotations

import argparse
from typing import Any

import socketio
from aiohttp import web

ROOM = "org:bench"


def create_app(redis_url: str, channel: str) -> web.Application:
    manager = socketio.AsyncRedisManager(redis_url, channel=channel)
    sio = socketio.AsyncServer(
        async_mode="aiohttp", client_manager=manager, logger=False, engineio_logger=False
    )
    # Bulk payloads (1,000 records) travel in one request.
    app = web.Application(client_max_size=256 * 1024 * 1024)
    sio.attach(app)

    async def subscribe(sid: str, data: Any) -> dict[str, Any]:
        await sio.enter_room(sid, ROOM)
        return {"ok": True, "version": 0, "changes": [], "reset": False}

    sio.on("leads:subscribe", subscribe)

    async def emit(request: web.Request) -> web.Response:
        body = await request.json()
        event = body.get("event", "leads:changes")
        for payload in body["payloads"]:
            await sio.emit(event, payload, room=ROOM)
        return web.json_response({"ok": True, "emitted": len(body["payloads"])})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_post("/emit", emit)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="bare python-socketio baseline server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True, help="redis:// URL")
    parser.add_argument("--channel", default="socketio", help="Redis pub/sub channel")
    args = parser.parse_args()
    web.run_app(
        create_app(args.redis, args.channel),
        host=args.host,
        port=args.port,
        print=None,
        access_log=None,
    )


if __name__ == "__main__":
    main()
