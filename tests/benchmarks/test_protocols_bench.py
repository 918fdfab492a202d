"""benchmarks/protocols.py end to end (2 calls per protocol): every protocol measured side by side,
overhead = round trip - model time, server CPU split at the model thread."""
from __future__ import annotations

import json

from benchmarks.protocols import main


def test_protocol_overhead_benchmark_runs(tmp_path) -> None:
    assert main(["--repeats", "2", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")]) == 0
    (result_file,) = (tmp_path / "out").glob("*-protocols.json")
    result = json.loads(result_file.read_text())
    act, enc = result["endpoints"]["act"], result["endpoints"]["encode"]
    assert list(act) == ["HTTP msgpack (/act)", "openpi WebSocket (/)", "KServe v2 binary (amplify_act)"]
    assert list(enc) == ["HTTP msgpack (/encode)", "KServe v2 binary (amplify_encode)"]
    for row in [*act.values(), *enc.values()]:
        assert row["round_trip"]["n"] == 2 and row["model"]["median_s"] > 0
        assert abs(row["round_trip"]["mean_s"] - row["model"]["mean_s"] - row["overhead"]["mean_s"]) < 1e-9
        assert row["server_cpu_per_request_s"] >= 0
    assert (tmp_path / "out" / result_file.name.replace(".json", ".md")).read_text().count("| act |") == 3
