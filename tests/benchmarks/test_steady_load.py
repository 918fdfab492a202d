"""Section 3's closed-loop window: the close rule alone, and one short run against a live unbatched server."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.serving import load, server_args, window_close
from benchmarks.server import Server, histogram

REPO = Path(__file__).resolve().parents[2]


def test_window_closes_after_duration_when_enough_completions() -> None:
    done = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]
    assert window_close(done, open_s=1.0, duration_s=2.0, min_requests=3, deadline_s=100) == (3.0, None)


def test_window_stays_open_until_min_requests() -> None:
    done = [1.0, 2.0, 4.0, 9.0, 12.0]  # only 1 completion in (1, 3]
    assert window_close(done, open_s=1.0, duration_s=2.0, min_requests=3, deadline_s=100) == (9.0, None)


def test_window_capped_by_deadline_with_a_note() -> None:
    close, note = window_close([1.0, 2.0, 4.0, 9.0], open_s=1.0, duration_s=2.0, min_requests=10, deadline_s=5.0)
    assert close == 5.0 and "max_s" in note and "2 of min_requests=10" in note


def test_window_after_a_warmup_past_the_deadline_keeps_one_completion() -> None:
    close, note = window_close([8.0, 9.5, 11.0], open_s=8.0, duration_s=2.0, min_requests=5, deadline_s=5.0)
    assert close == 9.5 and "1 of min_requests=5" in note


@pytest.fixture(scope="module")
def small_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("steady") / "small"
    subprocess.run([sys.executable, "-m", "amplify", "init", "--preset", "small", "--out", str(out)], cwd=REPO,
                   check=True, capture_output=True, timeout=120)
    return out


@pytest.mark.timeout(120)
def test_load_counts_only_window_completions(small_bundle_dir: Path) -> None:
    with Server(*server_args(str(small_bundle_dir), 1, "cpu"), "--max-batch-size", "1") as server:
        before = histogram(server.metrics(), "amplify_batch_requests", "encode")
        r = load(server, "encode", clients=4, duration_s=0.3, min_requests=8)
        after = histogram(server.metrics(), "amplify_batch_requests", "encode")
    assert {"clients", "requests", "window_s", "wall_s", "requests_per_s", "p50_s", "p95_s", "p99_s",
            "mean_batch_requests", "requests_per_s_little", "note"} <= set(r)
    assert r["note"] is None and r["requests"] >= 8 and r["window_s"] == pytest.approx(0.3)
    assert r["requests_per_s"] == pytest.approx(r["requests"] / r["window_s"])
    assert after[1] - before[1] == r["issued"]  # the server answered every issued request ...
    assert r["issued"] >= r["requests"] + 4  # ... but each client's first (warm-up) request was not counted
    assert r["mean_batch_requests"] == 1.0 and r["model_calls"] > 0  # snapshots at the edges lag by a few ms
    assert r["wall_s"] > r["window_s"] + r["warmup_s"] - 1e-9
