"""benchmarks/vision_step.py: the vision pretraining step timed before and now; both variants take the same step."""
from __future__ import annotations

import json

from benchmarks.vision_step import main, vision_steps


def test_vision_step_benchmark_runs(tmp_path) -> None:
    out = tmp_path / "out"
    assert main(["--repeats", "1", "--out", str(out)]) == 0
    (result_file,) = out.glob("*-vision-step.json")
    r = json.loads(result_file.read_text())
    assert r["before"]["median_s"] > 0 and r["now"]["median_s"] > 0 and r["before_over_now"] > 0
    assert "before / now" in result_file.with_suffix(".md").read_text()


def test_vision_step_variants_compute_the_same_loss() -> None:
    """Same seed, same batch: the layouts and optimizers differ, the first loss does not (up to rounding)."""
    steps = vision_steps(batch=2)
    before, now = steps["before"](), steps["now"]()
    assert abs(before - now) <= 1e-2 * abs(before)
