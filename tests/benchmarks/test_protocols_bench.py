"""benchmarks/protocols.py end to end (2 calls per protocol): every protocol measured side by side,
overhead = round trip - model time, the server's queue and resume hops, server CPU split at the model
thread; the WebSocket and HTTP transport floors and the thread wake-up probe beside them."""
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
        assert row["queue"]["n"] == 2 and row["resume"]["median_s"] > 0  # the server's own timestamps
    floor, probe = result["transport_floor"], result["wakeup_probe"]
    assert floor["frame_bytes"] > 2 * 128 * 128 * 3 and floor["busy"]["n"] == floor["idle"]["n"] == 5
    assert floor["model_s"] == probe["model_s"] == act["openpi WebSocket (/)"]["model"]["median_s"]
    assert floor["http"]["body_bytes"] > 2 * 128 * 128 * 3 and floor["http"]["busy"]["n"] == floor["http"]["idle"]["n"] == 5
    for regime in ("busy", "idle"):
        assert probe[regime]["queue"]["n"] == 5 and probe[regime]["resume"]["median_s"] > 0
    md = (tmp_path / "out" / result_file.name.replace(".json", ".md")).read_text()
    assert md.count("| act |") == 3 and "transport floor" in md and "sleeps" in md
    assert "HTTP transport floor" in md
