"""Bundles exported in every format: manifest complete, runtime outputs equal PyTorch's, and the
reference fixture's expected outputs reproduced through the exported graphs."""
from __future__ import annotations

import os

import numpy as np
import pytest

from amplify.checkpoints import file_sha256
from exporters.graphs import GRAPHS
from exporters.manifest import read_manifest
from exporters.runtime import load_exported

# (bundle, format) pairs: the fixture bundle and a random small bundle each as ONNX graphs (the
# random one in the Triton layout, which holds the same ONNX graphs, with int8 and top-k graphs) and
# as TorchScript, a random bundle with keypoint tokens as ONNX; any bundle listed in AMPLIFY_EXPORT_TEST_BUNDLES (os.pathsep-separated checkpoint
# paths, e.g. the trained default bundle) in every format.
EXTRA = [p for p in os.environ.get("AMPLIFY_EXPORT_TEST_BUNDLES", "").split(os.pathsep) if p]
CASES = [("fixture_small", "onnx"), ("fixture_small", "torchscript"), ("random_small", "triton"),
         ("random_small", "torchscript"), ("random_keypoints", "onnx"), *[(b, f) for b in EXTRA for f in ("onnx", "torchscript", "triton")]]
ATOL = 1e-4
API_METADATA_KEYS = ["views", "image_size", "track_horizon", "num_tracks", "code_length", "hidden_dim", "fsq_levels",
                     "codebook_size", "action_horizon", "action_dim", "proprio_dim", "text_embedding_dim", "instructions"]


@pytest.fixture(scope="module", params=CASES, ids=lambda p: f"{p[0].split('/')[-1]}-{p[1]}")
def exported(request, exports):
    bundle, fmt = request.param
    out, _ = exports.get(bundle, fmt)
    return bundle, fmt, out


def test_manifest_complete(exported, bundle_path, policies):
    bundle, fmt, out = exported
    m = read_manifest(out)
    policy = policies(bundle)
    cfg = policy.cfg
    assert m["runtime"] == fmt
    assert m["model"]["kind"] == "bundle"
    assert m["model"]["source_sha256"] == file_sha256(bundle_path(bundle))
    topk = {"predict_codes_topk", "act_topk"}
    assert set(m["graphs"]) == {g for g, spec in GRAPHS.items() if not spec.optional} | (topk if fmt == "triton" else set())
    assert m["sampling"] == (["argmax", "topk"] if fmt == "triton" else ["argmax"])
    for name, g in m["graphs"].items():
        path = out / g["file"]
        assert path.is_file() and g["bytes"] == path.stat().st_size and g["sha256"] == file_sha256(path)
        assert g["inputs"] and g["outputs"]
        for t in g["inputs"] + g["outputs"]:
            fixed = [d for i, d in enumerate(t["shape"][1:], 1) if not (t["name"] == "images" and i in (2, 3))]
            assert t["shape"][0] == "batch" and all(isinstance(d, int) for d in fixed), (name, t)
            if t["name"] == "images":  # any image size: resized once, inside, to the vision encoder's
                assert t["shape"][2:4] == ["height", "width"], (name, t)
            assert t["dtype"] in ("float32", "int64")
        if fmt != "torchscript":
            import onnx

            model = onnx.load(str(path))
            onnx.checker.check_model(model)
            assert [i.name for i in model.graph.input] == [t["name"] for t in g["inputs"]]
            assert [o.name for o in model.graph.output] == [t["name"] for t in g["outputs"]]
            dims = model.graph.input[0].type.tensor_type.shape.dim
            assert dims[0].dim_param == "batch"
            assert [d.dim_param or d.dim_value for d in dims[1:]] == g["inputs"][0]["shape"][1:]
    # parity at export: passed, batch 1 and a larger batch, every graph and output within tolerance
    p = m["parity"]
    assert p["passed"] and p["batch_sizes"] == [1, 3]
    for name in m["graphs"]:
        for b in ("1", "3"):
            assert set(p["max_abs_diff"][name][b]) == {t["name"] for t in m["graphs"][name]["outputs"]}
            assert all(v <= ATOL for v in p["max_abs_diff"][name][b].values())
    # what a server's /metadata needs, without torch
    meta = m["metadata"]
    assert set(API_METADATA_KEYS) <= set(meta)
    mt = cfg.motion_tokenizer
    assert meta["views"] == mt.views and meta["image_size"] == mt.img_shape
    assert (meta["track_horizon"], meta["num_tracks"], meta["code_length"], meta["hidden_dim"]) == (
        mt.track_pred_horizon, mt.num_tracks, mt.seq_len, mt.hidden_dim)
    assert meta["fsq_levels"] == mt.fsq_levels and meta["codebook_size"] == mt.codebook_size
    assert (meta["action_horizon"], meta["action_dim"], meta["proprio_dim"]) == (
        cfg.inverse_dynamics.action_horizon, cfg.inverse_dynamics.action_dim, cfg.inverse_dynamics.proprio_dim)
    assert meta["text_embedding_dim"] == cfg.forward_dynamics.text_embed_dim
    assert m["config"]["motion_tokenizer"]["hidden_dim"] == mt.hidden_dim
    assert {"torch", "onnx", "onnxruntime"} <= set(m["versions"])
    # the instruction table round-trips
    model = load_exported(out, threads=1)
    assert model.instructions == policy.instructions == meta["instructions"]
    np.testing.assert_array_equal(model._text_table, policy.text_table.numpy())


def _inputs(policy, b: int, seed: int):
    rng = np.random.default_rng(seed)
    mt = policy.cfg.motion_tokenizer
    images = rng.integers(0, 256, (b, mt.num_views, *mt.img_shape, 3), dtype=np.uint8)
    text_emb = rng.standard_normal((b, policy.cfg.forward_dynamics.text_embed_dim)).astype(np.float32)
    proprio = (rng.standard_normal((b, policy.cfg.inverse_dynamics.proprio_dim)) * 0.5).astype(np.float32)
    tracks = rng.uniform(-1, 1, (b, mt.num_views, mt.track_pred_horizon, mt.num_tracks, 2)).astype(np.float32)
    return images, text_emb, proprio, tracks


def test_runtime_matches_pytorch(exported, policies, batch=2):
    """Fresh inputs (not the export's), uint8 images, every runtime entry point against the library
    (batch 1 and 3 are checked at export, on every graph)."""
    import torch

    from amplify.tracks import points_to_velocities

    bundle, fmt, out = exported
    policy = policies(bundle)
    model = load_exported(out, threads=1)
    images, text_emb, proprio, tracks = _inputs(policy, batch, seed=100 + batch)
    with torch.no_grad():
        ref_idx, ref_codes = policy.predict_codes(images, text_emb=text_emb)
        ref_actions = policy.act(images, proprio, text_emb=text_emb)
        ref_traj = policy.predict_traj(images, tracks, text_emb=text_emb)
        ref_codes_mt, ref_idx_mt = policy.motion_tokenizer.tokenize(points_to_velocities(torch.from_numpy(tracks)))
        ref_vel, ref_logits = policy.motion_tokenizer.decode(policy.motion_tokenizer.indices_to_codes(ref_idx_mt))
        t = policy.image_tokens(images)
        ref_id = policy.inverse_dynamics(img_tokens=t.permute(0, 2, 1, 3).reshape(batch, t.shape[2], -1),
                                         text_emb=torch.from_numpy(text_emb), proprio=torch.from_numpy(proprio),
                                         codes=ref_codes)
    idx, codes = model.predict_codes(images, text_emb=text_emb)
    np.testing.assert_array_equal(idx, ref_idx.numpy())
    np.testing.assert_allclose(codes, ref_codes.numpy(), rtol=0, atol=ATOL)
    np.testing.assert_allclose(model.act(images, proprio, text_emb=text_emb), ref_actions.numpy(), rtol=0, atol=ATOL)
    np.testing.assert_allclose(model.predict_traj(images, tracks, text_emb=text_emb), ref_traj.numpy(), rtol=0, atol=ATOL)
    enc_idx, enc_codes = model.encode(tracks=tracks)
    np.testing.assert_array_equal(enc_idx, ref_idx_mt.numpy())
    np.testing.assert_allclose(enc_codes, ref_codes_mt.numpy(), rtol=0, atol=ATOL)
    vel, logits = model.decode(indices=enc_idx)
    np.testing.assert_allclose(vel, ref_vel.numpy(), rtol=0, atol=ATOL)
    np.testing.assert_allclose(logits, ref_logits.numpy(), rtol=0, atol=ATOL)
    actions = model.inverse_dynamics(codes, images=images, proprio=proprio, text_emb=text_emb)
    np.testing.assert_allclose(actions, ref_id.numpy(), rtol=0, atol=ATOL)
    if model.instructions:  # text through the export's instruction table
        text = [model.instructions[i % len(model.instructions)] for i in range(batch)]
        np.testing.assert_array_equal(model.act(images, proprio, text=text),
                                      model.act(images, proprio, text_emb=model.embed_text(text)))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_fixture_expected_outputs(fmt, exports, small_fixture):
    """The original research code's outputs, reproduced by the exported graphs."""
    out, _ = exports.get("fixture_small", fmt)
    _, inp, exp = small_fixture
    model = load_exported(out, threads=1)
    idx, codes = model.predict_codes(inp["images"], text_emb=inp["text_emb"])
    np.testing.assert_array_equal(idx, exp["amp_pred_indices"])
    np.testing.assert_allclose(codes, exp["amp_pred_codes"], rtol=0, atol=ATOL)
    np.testing.assert_allclose(model.act(inp["images"], inp["proprio"], text_emb=inp["text_emb"]), exp["amp_actions"],
                               rtol=0, atol=ATOL)
    np.testing.assert_allclose(model.predict_traj(inp["images"], inp["init_queries"], text_emb=inp["text_emb"]),
                               exp["amp_pred_traj"], rtol=0, atol=ATOL)
    enc_idx, enc_codes = model.encode(tracks=inp["tracks"])
    np.testing.assert_array_equal(enc_idx, exp["mt_indices"])
    np.testing.assert_allclose(enc_codes, exp["mt_codes"], rtol=0, atol=ATOL)
    vel, logits = model.decode(codes=exp["mt_codes"])
    np.testing.assert_allclose(vel, exp["mt_x_recon"], rtol=0, atol=ATOL)
    np.testing.assert_allclose(logits, exp["mt_rel_logits"], rtol=0, atol=ATOL)


def test_topk_sampling(exports, policies):
    """Top-k graphs: repeatable per seed, varied across seeds, and every first token is one of the
    k most likely under PyTorch's logits (the fixed-noise parity against the uncached PyTorch
    computation is checked at export)."""
    import torch

    out, _ = exports.get("random_small", "triton")
    model = load_exported(out, threads=1)
    policy = policies("random_small")
    images, text_emb, proprio, _ = _inputs(policy, 1, seed=7)
    images, text_emb, proprio = (np.repeat(x, 12, axis=0) for x in (images, text_emb, proprio))
    a, _ = model.predict_codes(images, text_emb=text_emb, sampling="topk", seed=1)
    b, _ = model.predict_codes(images, text_emb=text_emb, sampling="topk", seed=1)
    c, _ = model.predict_codes(images, text_emb=text_emb, sampling="topk", seed=2)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any() and len(set(a[:, 0])) > 1
    with torch.no_grad():
        _, logits = policy.forward_dynamics.predict(
            policy.forward_dynamics.get_cond_tokens(policy.image_tokens(images[:1]).flatten(1, 2), torch.from_numpy(text_emb[:1])),
            return_logits=True)
    top = set(torch.topk(logits[0, 0], policy.cfg.forward_dynamics.top_k).indices.tolist())
    assert set(a[:, 0].tolist()) <= top
    actions = model.act(images[:2], proprio[:2], text_emb=text_emb[:2], sampling="topk", seed=3)
    assert actions.shape == (2, 16, 7) and np.isfinite(actions).all()
    with pytest.raises(ValueError, match="no top-k graphs"):
        load_exported(exports.get("random_small", "torchscript")[0], threads=1).act(images[:1], proprio[:1],
                                                                                      text_emb=text_emb[:1], sampling="topk")
