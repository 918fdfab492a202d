"""Load, short version (the 10-minute soak is ``python -m tests.reliability.soak``): 8 concurrent
clients on mixed endpoints (JSON and msgpack, batches 1-2) for 20 s (after 6 s of warm-up) against a live server. No request
may fail; p99 latency and the server's memory growth are reported, and the growth is bounded."""
from __future__ import annotations

import json

import pytest

from tests.reliability.harness import run_load

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

WARMUP_SECONDS = 6
SECONDS = 20
CLIENTS = 8
MAX_RSS_GROWTH_MIB = 150  # after a 6 s warm-up and the first fifth of the run; see docs/reliability.md


def test_mixed_load_no_failures(live_server, record_property) -> None:
    warm = run_load(live_server.url, WARMUP_SECONDS, CLIENTS, live_server.pid)  # allocator and caches fill up
    assert not warm.failures, warm.summary()
    report = run_load(live_server.url, SECONDS, CLIENTS, live_server.pid)
    summary = report.summary()
    record_property("load_summary", json.dumps(summary))
    print("\nshort load:", json.dumps(summary))
    assert not report.failures, summary
    assert report.requests > 50, summary
    assert {"/encode", "/decode", "/act"} <= set(report.latencies), summary
    assert summary["rss_growth_mib"] < MAX_RSS_GROWTH_MIB, summary
    assert live_server.proc.poll() is None
