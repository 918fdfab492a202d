"""benchmarks/onednn_linear.py end to end on the small preset (one turn, one thread, batch 1): both
paths timed, the FD stage taken apart, indices compared, the report written."""
from __future__ import annotations

import json

import pytest

from amplify.inference import onednn_linear_available
from benchmarks.onednn_linear import main


@pytest.mark.skipif(not onednn_linear_available(), reason="no oneDNN packed linear product in this torch")
def test_onednn_linear_benchmark_runs(tmp_path, small_bundle) -> None:
    small_bundle.save(tmp_path / "bundle")
    out = tmp_path / "out"
    assert main(["--bundle", str(tmp_path / "bundle"), "--threads", "1", "--batches", "1", "--repeats", "1",
                 "--out", str(out)]) == 0
    (result_file,) = out.glob("*-onednn-linear.json")
    r = json.loads(result_file.read_text())
    assert r["indices_equal_unprepared"]["1"]["mkl"] and r["indices_equal_unprepared"]["1"]["onednn"]
    t1 = r["threads"]["1"]
    assert set(t1["fd_b1"]) == {"mkl", "onednn"} and t1["fd_b1"]["onednn"]["step"] > 0
    assert t1["batch1"]["act:mkl"] > 0 and t1["floor"]["bandwidth_floor_ms"] > 0
    text = result_file.with_suffix(".md").read_text()
    assert "MKL / oneDNN" in text and "bandwidth floor" in text
