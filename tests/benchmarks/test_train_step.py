"""benchmarks/train_step.py: both training steps timed before and now, and the two variants are the same step."""
from __future__ import annotations

import json

import torch

from benchmarks.train_step import main, mt_models, mt_steps


def test_train_step_benchmark_runs(tmp_path) -> None:
    out = tmp_path / "out"
    assert main(["--repeats", "1", "--out", str(out)]) == 0
    (result_file,) = out.glob("*-train-step.json")
    r = json.loads(result_file.read_text())
    for name in ("vision", "mt"):
        assert r[name]["before"]["median_s"] > 0 and r[name]["now"]["median_s"] > 0 and r[name]["before_over_now"] > 0
    assert "| vision |" in result_file.with_suffix(".md").read_text()


def test_mt_variants_differ_only_in_dropout_modules() -> None:
    """'before' swaps the identities back to zero dropouts: the same weights and the same output."""
    old, new = mt_models()
    assert any(isinstance(m, torch.nn.Dropout) for m in old.modules())
    assert not any(isinstance(m, torch.nn.Dropout) for m in new.modules())
    assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(), new.state_dict().values()))
    steps = mt_steps(batch=2)
    assert set(steps) == {"before", "now"}
