"""The garbage collector on a running server: thresholds and freeze applied
after start-up (and undone on close), every pause timed into `/metrics`,
long pauses logged."""

from __future__ import annotations

import asyncio
import gc
import logging
import os

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import settings_with

from leadstream.server.config import ConfigError, Settings
from leadstream.server.http.app import create_app
from leadstream.server.http.appkeys import METRICS
from leadstream.server.metrics import GCPauses


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


async def test_the_collector_is_tuned_while_the_server_runs_and_pauses_are_exposed(
    settings, serve_app, http: aiohttp.ClientSession
) -> None:
    before = gc.get_threshold()
    tuned = settings_with(settings, gc_thresholds=(40_000, 15, 50), gc_freeze=True)
    app = create_app(tuned)
    server = await serve_app(app)
    assert gc.get_threshold() == (40_000, 15, 50)
    assert gc.get_freeze_count() > 0  # start-up's objects no longer walked by collections

    junk = [[i] for i in range(50_000)]  # enough tracked objects for a young collection
    del junk
    gc.collect(1)
    gc.collect()
    async with http.get(server.make_url("/metrics")) as response:
        text = await response.text()
    counts = samples(text, "leadstream_gc_pause_seconds_count")
    assert counts[(("generation", "2"),)] >= 1
    assert counts[(("generation", "1"),)] >= 1
    longest = samples(text, "leadstream_gc_pause_max_seconds")
    assert longest[(("generation", "2"),)] > 0
    buckets = samples(text, "leadstream_gc_pause_seconds_bucket")
    assert buckets[(("generation", "2"), ("le", "+Inf"))] == counts[(("generation", "2"),)]
    # Which process answered (the load test tells `serve --workers` apart by it).
    assert samples(text, "leadstream_process_info") == {(("pid", str(os.getpid())),): 1.0}

    await server.close()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
    registry = app[METRICS].registry
    timed = registry.get_sample_value("leadstream_gc_pause_seconds_count", {"generation": "2"})
    gc.collect()  # no longer timed: the callback went with the app
    after = registry.get_sample_value("leadstream_gc_pause_seconds_count", {"generation": "2"})
    assert timed is not None and after == timed


async def test_a_long_pause_is_logged_from_the_loop(caplog: pytest.LogCaptureFixture) -> None:
    pauses = GCPauses(log_over_s=1e-9)  # every collection counts as long here
    pauses.start()
    try:
        with caplog.at_level(logging.WARNING, logger="leadstream.server.metrics"):
            gc.collect()
            await asyncio.sleep(0)  # the line is written by the loop, not inside the collector
    finally:
        pauses.close()
    assert any("garbage collection of generation 2" in r.getMessage() for r in caplog.records)
    assert pauses.longest > 0


def test_thresholds_setting() -> None:
    assert Settings.from_env({}).gc_thresholds == (10_000, 5, 100)
    assert Settings.from_env({"LEADSTREAM_GC_THRESHOLDS": "1000,10,10"}).gc_thresholds == (
        1000,
        10,
        10,
    )
    assert Settings.from_env({"LEADSTREAM_GC_THRESHOLDS": "python"}).gc_thresholds is None
    assert Settings.from_env({"LEADSTREAM_GC_FREEZE": "0"}).gc_freeze is False
    for bad in ("1000,10", "a,b,c", "0,10,10"):
        with pytest.raises(ConfigError, match="LEADSTREAM_GC_THRESHOLDS"):
            Settings.from_env({"LEADSTREAM_GC_THRESHOLDS": bad})
