"""``benchmarks.precision`` on a random small bundle: bf16 (vision float32) against float32, and the
earlier all-bfloat16 variant, on the same random inputs."""
import torch

from benchmarks.precision import bf16_with_bf16_vision, run


def test_precision_compares_both_bf16_variants_on_random_inputs(tmp_path, small_bundle):
    path = small_bundle.save(tmp_path / "bundle")
    r = run(str(path), world=False, random_n=2, timing_batch=2, timing_repeats=1)
    assert r["timing"]["batch"] == 2 and r["timing"]["fp32"]["speedup_over_fp32"] == 1.0
    assert all(r["timing"][k]["median_s"] > 0 for k in ("fp32", "bf16", "bf16_mm", "bf16_vision_bf16"))
    for key in ("random_inputs", "random_inputs_bf16_mm", "random_inputs_bf16_vs_bf16_mm", "random_inputs_bf16_vision_bf16"):
        c = r[key]
        assert c["calls"] == 2 and c["tokens"] > 0 and 0.0 <= c["token_agreement"] <= 1.0
        assert 0.0 <= c["median_of_per_call_max_action_diff"] <= c["max_abs_action_diff"] < 2.0
    assert "world_fp32" not in r


def test_bf16_vision_variant_casts_only_the_vision_encoder(small_bundle):
    import copy

    m = bf16_with_bf16_vision(copy.deepcopy(small_bundle).prepare_for_inference("bf16"))
    assert all(p.dtype == torch.bfloat16 for p in m.img_encoder.parameters())
    assert all(p.dtype == torch.float32 for p in m.motion_tokenizer.parameters())


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
    assert "bf16_mm / fp32 req/s" in text and "random_inputs_bf16_vs_bf16_mm" in text and "| 2 |" in text


def test_bf16_vision_variant_runs_a_keypoint_trunk():
    """The keypoint maps (float32) take the bfloat16 trunk's features in their own dtype."""
    import copy

    from amplify import AMPLIFY
    from tests.test_model_math import keypoint_bundle_config

    torch.manual_seed(0)
    model = AMPLIFY(keypoint_bundle_config()).eval().requires_grad_(False)
    b16 = bf16_with_bf16_vision(copy.deepcopy(model).prepare_for_inference("bf16"))
    images = torch.rand(2, 64, 64, 3)
    with torch.no_grad():
        ref, out = model.img_encoder(images), b16.img_encoder(images)
    assert out.dtype == torch.float32 and out.shape == ref.shape and torch.isfinite(out).all()
    torch.testing.assert_close(out[:, :4], ref[:, :4], rtol=0.1, atol=0.1)  # the patches, rounded to bfloat16
