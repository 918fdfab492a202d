"""``benchmarks.precision`` on a random small bundle: bf16 (vision float32) and bf16-all (vision in
bfloat16 too) against float32, on the same random inputs."""
import torch

from benchmarks.precision import run


def test_precision_compares_both_bf16_variants_on_random_inputs(tmp_path, small_bundle):
    path = small_bundle.save(tmp_path / "bundle")
    r = run(str(path), world=False, random_n=2, timing_batch=2, timing_repeats=1)
    assert r["timing"]["batch"] == 2 and r["timing"]["fp32"]["speedup_over_fp32"] == 1.0
    assert all(r["timing"][k]["median_s"] > 0 for k in ("fp32", "bf16", "bf16_mm", "bf16_all"))
    for key in ("random_inputs", "random_inputs_bf16_mm", "random_inputs_bf16_vs_bf16_mm", "random_inputs_bf16_all"):
        c = r[key]
        assert c["calls"] == 2 and c["tokens"] > 0 and 0.0 <= c["token_agreement"] <= 1.0
        assert 0.0 <= c["median_of_per_call_max_action_diff"] <= c["max_abs_action_diff"] < 2.0
    assert "world_fp32" not in r


def test_precision_times_several_batches_and_writes_a_summary(tmp_path, small_bundle):
    import json

    from benchmarks.precision import main

    path = small_bundle.save(tmp_path / "bundle")
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    assert main(["--bundle", str(path), "--no-world", "--random-batches", "1", "--timing", "1,2",
                 "--timing-repeats", "1", "--threads", "1", "--out", str(out), "--md", str(md)]) == 0
    r = json.loads(out.read_text())
    assert r["timing"]["batch"] == 1 and r["timing_b2"]["batch"] == 2
    text = md.read_text()
    assert "bf16_mm / fp32 req/s" in text and "bf16_all / fp32 req/s" in text and "random_inputs_bf16_vs_bf16_mm" in text
    assert "| 2 |" in text
