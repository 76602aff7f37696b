"""Operations through the whole app: /metrics moves with traffic (each
family is unit-tested in test_metrics.py), expired
export files are removed, expired download links are refused."""

from __future__ import annotations

import time

from support import Scrape, bearer

from leadstream.server.http.appkeys import EXPORTS

FAMILIES = (
    "leadstream_http_request_duration_seconds",
    "leadstream_http_errors",
    "leadstream_sockets_connected",
    "leadstream_socketio_events_received",
    "leadstream_socketio_events_sent",
    "leadstream_agent_turns",
    "leadstream_agent_tokens",
    "leadstream_tool_duration_seconds",
    "leadstream_cache_hits",
    "leadstream_cache_misses",
    "leadstream_job_queue_depth",
    "leadstream_store_query_duration_seconds",
)


async def metrics(http, server) -> dict[str, float]:
    return (await Scrape.of(http, server.make_url("/metrics"))).totals()


async def test_metrics_move_when_traffic_flows(server, connect, token, http):
    before = await metrics(http, server)
    client = await connect(server, token())
    done = await client.chat("find 10 CTOs")
    await client.chat("export to csv", done["ack"]["conversationId"])
    await client.log.wait_for("export:ready")
    assert (await http.get(server.make_url("/api/leads"))).status == 401
    for _ in range(2):
        await http.get(server.make_url("/api/leads"), headers=bearer(token()))
    after = await metrics(http, server)
    assert after["leadstream_sockets_connected"] == 1
    names = set(after)
    for family in FAMILIES:
        assert any(name.startswith(family) for name in names), family
    moved = [
        name
        for name in after
        if name.endswith(("_total", "_count")) and after[name] > before.get(name, 0)
    ]
    for prefix in (
        "leadstream_socketio_events_received",
        "leadstream_socketio_events_sent",
        "leadstream_agent_turns",
        "leadstream_cache_misses",
        "leadstream_cache_hits",
        "leadstream_tool_duration_seconds",
        "leadstream_store_query_duration_seconds",
        "leadstream_http_request_duration_seconds",
        "leadstream_http_errors",
    ):
        assert any(name.startswith(prefix) for name in moved), prefix


async def test_expired_export_files_are_removed_and_links_refused(server, connect, token, http):
    client = await connect(server, token())
    done = await client.chat("find 5 CTOs")
    await client.chat("export to csv", done["ack"]["conversationId"])
    ready = await client.log.wait_for("export:ready")
    exports = server.app[EXPORTS]
    assert exports.path(ready["jobId"]).exists()
    assert exports.remove_expired_files() == 0
    assert exports.remove_expired_files(now=time.time() + exports.signer.ttl_s + 5) == 1
    gone = await http.get(server.make_url(ready["url"]))
    assert gone.status == 404
    expired = exports.signer.url(ready["jobId"], now=time.time() - exports.signer.ttl_s - 5)
    refused = await http.get(server.make_url(expired))
    assert refused.status == 403 and (await refused.json())["error"]["code"] == "forbidden"
