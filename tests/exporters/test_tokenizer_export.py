"""A motion tokenizer exported alone (the per-view fixture: diag mask, FSQ [8, 8, 8], 25 tracks)."""
from __future__ import annotations

import numpy as np
import pytest

from exporters.runtime import InputError, load_exported

ATOL = 1e-4


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_perview_tokenizer(fmt, exports, perview_fixture):
    _, inp, exp = perview_fixture
    out, manifest = exports.get("fixture_perview_mt", fmt)
    assert manifest["model"]["kind"] == "motion_tokenizer"
    assert set(manifest["graphs"]) == {"encode", "indices_to_codes", "decode"}
    assert manifest["metadata"]["fsq_levels"] == [8, 8, 8] and manifest["metadata"]["code_length"] == 16
    assert manifest["metadata"]["action_horizon"] is None
    model = load_exported(out, threads=1)
    assert not model.has("act")
    for b in (1, 3):  # batch 1 and the fixture's batch of 3
        idx, codes = model.encode(tracks=inp["tracks"][:b])
        np.testing.assert_array_equal(idx, exp["mt_indices"][:b])
        np.testing.assert_allclose(codes, exp["mt_codes"][:b], rtol=0, atol=ATOL)
        vel, logits = model.decode(indices=idx)
        np.testing.assert_allclose(vel, exp["mt_x_recon"][:b], rtol=0, atol=ATOL)
        np.testing.assert_allclose(logits, exp["mt_rel_logits"][:b], rtol=0, atol=ATOL)
    np.testing.assert_allclose(model.indices_to_codes(exp["mt_indices"]), exp["mt_codes"], rtol=0, atol=ATOL)
    with pytest.raises(KeyError, match="no 'act' graph"):
        model.act(np.zeros((1, 2, 128, 128, 3), np.float32), text_emb=np.zeros((1, 512), np.float32))


def test_random_tokenizer_roundtrip(exports):
    """A tokenizer export without ../shared: graphs agree with the PyTorch tokenizer at batch 1 and 3."""
    import torch

    from amplify import load_motion_tokenizer

    out, manifest = exports.get("random_mt", "onnx")
    assert set(manifest["graphs"]) == {"encode", "indices_to_codes", "decode"} and manifest["parity"]["passed"]
    mt, cfg = load_motion_tokenizer(manifest["model"]["source"])
    model = load_exported(out, threads=1)
    rng = np.random.default_rng(0)
    for b in (1, 3):
        tracks = rng.uniform(-1, 1, (b, 2, 16, 16, 2)).astype(np.float32)
        with torch.no_grad():
            codes, idx = mt.tokenize(torch.from_numpy(np.diff(tracks, axis=2)))
            vel, _ = mt.decode(codes)
        got_idx, got_codes = model.encode(tracks=tracks)
        np.testing.assert_array_equal(got_idx, idx.numpy())
        np.testing.assert_allclose(got_codes, codes.numpy(), rtol=0, atol=ATOL)
        np.testing.assert_allclose(model.decode(indices=got_idx)[0], vel.numpy(), rtol=0, atol=ATOL)


def test_runtime_input_errors(exports):
    """Wrong shapes, dtypes, values and batch sizes name the field and the expected shape."""
    out, _ = exports.get("random_mt", "onnx")
    model = load_exported(out, threads=1)
    with pytest.raises(InputError, match=r"velocities: expected shape \(b, 2, 15, 16, 2\), got \(1, 2, 15, 15, 2\)"):
        model.encode(velocities=np.zeros((1, 2, 15, 15, 2), np.float32))
    with pytest.raises(InputError, match="tracks: expected shape"):
        model.encode(tracks=np.zeros((1, 2, 5, 16, 2), np.float32))
    with pytest.raises(InputError, match="exactly one"):
        model.encode()
    with pytest.raises(InputError, match="indices: expected integers, got float32"):
        model.decode(indices=np.zeros((1, 15), np.float32))
    with pytest.raises(InputError, match=r"indices: values must be in \[0, 64\)"):
        model.decode(indices=np.full((1, 15), 64))
    with pytest.raises(InputError, match="NaN"):
        model.decode(codes=np.full((1, 15, 64), np.nan, np.float32))
    with pytest.raises(InputError, match=r"codes: expected shape \(b, 15, 64\), got \(0, 15, 64\)"):
        model.decode(codes=np.zeros((0, 15, 64), np.float32))


def test_tokenizer_with_fsq_input_options_exports(exports, export_root):
    """The opt-in FSQ input options (layer norm before FSQ, standardized project_in with running
    statistics) trace into ONNX; the export's own parity check and a direct comparison agree."""
    import dataclasses

    import torch

    from amplify import MotionTokenizer, load_motion_tokenizer, save_model
    from amplify.presets import small

    cfg = dataclasses.replace(small().motion_tokenizer, fsq_input_norm=True, fsq_input_std=1.0)
    torch.manual_seed(0)
    mt = MotionTokenizer(cfg)
    mt.quantize.project_in.running_mean.normal_()  # statistics that matter in the graph
    mt.quantize.project_in.running_var.uniform_(0.5, 2.0)
    path = save_model(mt.eval(), export_root / "mt_fsq_options", {"name": "mt-fsq-options"})
    out, manifest = exports.get(str(path), "onnx")
    assert manifest["parity"]["passed"]
    again, _ = load_motion_tokenizer(path)
    tracks = np.random.default_rng(1).uniform(-1, 1, (2, 2, 16, 16, 2)).astype(np.float32)
    with torch.no_grad():
        _, idx = again.tokenize(torch.from_numpy(np.diff(tracks, axis=2)))
    np.testing.assert_array_equal(load_exported(out, threads=1).encode(tracks=tracks)[0], idx.numpy())
