"""benchmarks/gpu.py, the prepared GPU run of issue 17 target 5, end to end on the CPU (--device cpu
--quick): every section runs and is rendered; a failing section is recorded, not raised."""
from __future__ import annotations

import json

from benchmarks import gpu


def test_gpu_script_runs_every_section_on_the_cpu(tmp_path) -> None:
    assert gpu.main(["--device", "cpu", "--quick", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")]) == 0
    (result_file,) = (tmp_path / "out").glob("gpu-*.json")
    r = json.loads(result_file.read_text())
    assert r["card"]["name"] == "CPU (no GPU)"
    for name in ("act", "websocket", "onnxruntime"):
        assert "error" not in r[name], r[name].get("traceback")
    act = r["act"]
    assert set(act["batches"]) == {"1", "2"} and act["bf16_vs_fp32"]["tokens"] > 0
    assert act["batches"]["2"]["fp32"]["requests_per_s"] > 0 and act["robots_fp32"]["robots"] == 64
    ws = r["websocket"]["fp32"]
    assert ws["round_trip"]["n"] == 3 and ws["model"]["median_s"] > 0 and ws["server_device"] == "cpu"
    assert set(r["onnxruntime"]["CPUExecutionProvider"]) == {"1", "16"}
    md = (tmp_path / "out" / result_file.name.replace(".json", ".md")).read_text()
    assert "CPU (no GPU)" in md and "64 robots at 10 Hz" in md and "| fp32 |" in md


def test_robots_batch_is_the_smallest_batch_whose_calls_fit_the_cycle() -> None:
    rows = {1: {"median_s": 0.004}, 8: {"median_s": 0.010}, 16: {"median_s": 0.015}, 64: {"median_s": 0.05}}
    r = gpu.robots_batch(rows)  # 64 robots at 10 Hz: 64 x 4 ms = 256 ms, 8 x 10 = 80 ms, 4 x 15 = 60 ms
    assert r["smallest_batch"] == 8 and abs(r["seconds_per_cycle"][1] - 0.256) < 1e-9
    assert gpu.robots_batch({1: {"median_s": 0.01}})["smallest_batch"] is None


def test_a_failing_section_is_recorded_and_the_run_goes_on() -> None:
    result: dict = {}

    def broken() -> dict:
        raise RuntimeError("CUDA error: no kernel image is available")
    gpu.run_section(result, "act", broken)
    assert result["act"]["error"].startswith("RuntimeError: CUDA error") and "Traceback" in result["act"]["traceback"]
    assert "act: failed" in gpu.render({"time": "t", "command": "c", "card": {"name": "x"}, **result})
