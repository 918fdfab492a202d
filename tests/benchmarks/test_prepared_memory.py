"""benchmarks/prepared_memory.py on the small preset: both variants measured in their own processes."""
from __future__ import annotations

import json

from benchmarks.prepared_memory import main


def test_prepared_memory_benchmark_runs(tmp_path, small_bundle) -> None:
    small_bundle.save(tmp_path / "bundle")
    out = tmp_path / "out"
    assert main(["--bundle", str(tmp_path / "bundle"), "--repeats", "1", "--out", str(out)]) == 0
    (result_file,) = out.glob("*-prepared-memory.json")
    r = json.loads(result_file.read_text())
    rows = {row["variant"]: row for row in r["runs"]}
    assert set(rows) == {"onednn", "mkl"}
    assert all(row["loaded_mb"] > 0 and row["prepared_mb"] > 0 for row in rows.values())
    assert rows["mkl"]["packed"] == rows["mkl"]["unpacked_copy_dropped"] == 0  # AMPLIFY_ONEDNN_LINEAR=0
    assert rows["onednn"]["linear_layers"] == rows["mkl"]["linear_layers"] > 0
    assert "prepared - loaded" in result_file.with_suffix(".md").read_text()
