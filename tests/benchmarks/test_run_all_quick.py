"""``python -m benchmarks.run_all --quick`` end to end, so the harness cannot rot."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(240)
def test_run_all_quick_writes_every_section(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "benchmarks.run_all", "--quick", "--threads", "1", "--out", str(tmp_path / "results"),
           "--cache", str(tmp_path / "cache")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=230)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (js,) = (tmp_path / "results").glob("*.json")
    (md,) = (tmp_path / "results").glob("*.md")
    r = json.loads(js.read_text())
    act = r["inprocess"]["act"]["1"]
    assert {"cached_torch", "cached_torch_prepared", "reference_torch", "torchscript", "onnxruntime_float32",
            "onnxruntime_int8"} <= set(act)
    assert act["onnxruntime_float32"]["max_abs_diff_vs_torch"] < 1e-3
    assert act["cached_torch_prepared"]["max_abs_diff_vs_torch"] < 1e-4
    for key in ("cached_torch_prepared_bf16", "cached_torch_prepared_bf16_all"):
        bf16 = act[key]  # opt-in bfloat16: its cost is measured, not bounded tightly
        assert 0.0 <= bf16["token_agreement_vs_fp32"] <= 1.0 and 0.0 <= bf16["max_abs_diff_vs_fp32"] < 1.0
    assert "2. bf16-all batch-16" in md.read_text() or "| 1 | bf16-all |" in md.read_text()
    floor = r["inprocess"]["floor_same_turns"]
    assert 0 < floor["bandwidth_floor_s"] <= floor["roofline_floor_s"]
    assert 0 < floor["fd_prefix_flops"] < floor["fd_flops"]
    assert "fd_predict_cached_prepared_unfused" in r["inprocess"]["stages"]
    assert r["inprocess"]["indices_identical"] is True
    assert r["inprocess"]["stages"]["mt_decode_identical_b8"] is True
    assert r["inprocess"]["flops"]["act_cached"] < r["inprocess"]["flops"]["act_reference"]
    over = r["service"]["overhead"]
    assert over["act"]["msgpack"]["request_bytes"] < over["act"]["json"]["request_bytes"]
    m = over["act"]["msgpack"]
    assert 0 <= m["server_cpu_outside_model_thread_s_per_request"] <= m["server_cpu_s_per_request"]
    window = r["service"]["window"]
    for mode in ("unbatched", "batched"):
        for endpoint in ("act", "encode"):
            for level in r["service"][mode][endpoint].values():  # closed-loop windows: warm-up excluded
                assert level["requests"] >= window["min_requests"] == 4
                assert level["window_s"] >= window["durations_s"][endpoint] - 1e-6
                assert level["issued"] >= level["requests"] + level["clients"]
                assert level["requests_per_s"] == pytest.approx(level["requests"] / level["window_s"])
    assert r["service"]["unbatched"]["act"]["4"]["mean_batch_requests"] == 1.0
    text = md.read_text()
    for heading in ("## 1.", "## 2.", "## 3.", "## Targets of issue 17"):
        assert heading in text
