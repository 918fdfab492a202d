"""Parity with checkpoints written by the original research code (../shared/fixtures/original).

Indices and class choices must be exactly equal; floats within ATOL = 1e-4 absolute. The largest
difference we see is ~2e-6 (float32 summation order: the fixtures were made with torch 2.14.1,
this runs 2.13.0 and a different attention kernel); argmax margins in the fixtures are >= 1.5e-4,
so class choices are stable at that level. Every check runs on the original .pt files and on the
same models after conversion to the project's format.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from einops import rearrange

from amplify import AMPLIFY, load_forward_dynamics, load_inverse_dynamics, load_motion_tokenizer, points_to_velocities
from amplify.inference import InferenceLinear, onednn_linear_available, prepare_for_inference
from amplify.loading import save_model
from tests.conftest import pack_every_linear

ATOL = 1e-4


def close(actual, expected, atol=ATOL):
    a = actual.detach().cpu().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    np.testing.assert_allclose(a, expected, rtol=0, atol=atol)


def equal(actual, expected):
    a = actual.detach().cpu().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    np.testing.assert_array_equal(a.astype(np.int64), expected.astype(np.int64))


@pytest.fixture(scope="module", params=["original", "project", "prepared", "prepared_onednn"])
def fmt(request):
    """How the checkpoint is loaded: the original file, our format, or the original file with its linear
    layers swapped for the inference ones (``prepare_for_inference``, what the torch back end serves);
    ``prepared_onednn``: the same with every float32 product on oneDNN's packed weights (the fixtures'
    layers are below the size where the served path packs them)."""
    if request.param == "prepared_onednn" and not onednn_linear_available():
        pytest.skip("this torch has no oneDNN packed linear product")
    return request.param


def _prepare(model, fmt):
    if fmt == "prepared":
        prepare_for_inference(model)
    elif fmt == "prepared_onednn":
        with pack_every_linear():
            prepare_for_inference(model, onednn=True)


def _mt(d, fmt, tmp_path_factory):
    model, cfg = load_motion_tokenizer(d / "mt.pt")
    if fmt == "project":
        out = tmp_path_factory.mktemp("mt")
        save_model(model, out)
        model, cfg = load_motion_tokenizer(out)
    _prepare(model, fmt)
    return model


@pytest.mark.parametrize("name", ["small", "alt_perview"])
def test_motion_tokenizer(name, fmt, tmp_path_factory, request):
    d, inp, exp = request.getfixturevalue("small_fixture" if name == "small" else "perview_fixture")
    mt = _mt(d, fmt, tmp_path_factory)
    tracks = torch.from_numpy(inp["tracks"])
    vel = points_to_velocities(tracks, time_dim=2)
    close(vel, exp["mt_velocities"], 0)
    with torch.no_grad():
        z = mt.encode(vel)
        close(z, exp["mt_z"])
        close(mt.quantize.project_in(z), exp["mt_fsq_projected"])
        codes, indices = mt.quantize(z)
        close(codes, exp["mt_codes"])
        equal(indices, exp["mt_indices"])
        for fast in (False, True):  # the original's per-point MLP and its separable form
            x_recon, logits = mt.decode(torch.from_numpy(exp["mt_codes"]), fast=fast)
            close(logits, exp["mt_rel_logits"])
            np.testing.assert_array_equal(x_recon.numpy(), exp["mt_x_recon"])  # argmax classes, exactly
        x_recon, idx, logits = mt(vel)
        np.testing.assert_array_equal(x_recon.numpy(), exp["mt_fwd_x_recon"])
        equal(idx, exp["mt_fwd_indices"])
        close(logits, exp["mt_fwd_rel_logits"])
        close(mt.get_loss(x_recon, logits, gt_vel=vel, gt_traj=tracks), exp["mt_loss"])
        close(mt.loss_per_point(logits, tracks), exp["mt_loss_unreduced"])


def test_relative_targets(small_fixture, perview_fixture):
    from amplify.tracks import relative_class_targets

    for d, inp, exp in (small_fixture, perview_fixture):
        mt, cfg = load_motion_tokenizer(d / "mt.pt")
        tr = torch.from_numpy(inp["tracks"])
        t = relative_class_targets(tr[:, :, :-1], tr[:, :, 1:], cfg.cls_img_size, cfg.rel_cls_img_size)
        equal(t, exp["mt_rel_targets"])


@pytest.fixture(scope="module")
def bundle(small_fixture, fmt, tmp_path_factory):
    d = small_fixture[0]
    model = AMPLIFY.load(d / "amplify.pt")
    if fmt == "project":
        out = tmp_path_factory.mktemp("bundle")
        model.save(out)
        model = AMPLIFY.load(out)
    _prepare(model, fmt)
    return model


def test_bundle_act_codes_traj(bundle, small_fixture):
    _, inp, exp = small_fixture
    images, text_emb = inp["images"], inp["text_emb"]
    tokens = bundle.image_tokens(images)
    close(rearrange(tokens, "b v p d -> (b v) p d"), exp["img_tokens"])
    indices, codes = bundle.predict_codes(images, text_emb=text_emb)
    equal(indices, exp["amp_pred_indices"])
    close(codes, exp["amp_pred_codes"])
    close(bundle.predict_traj(images, inp["init_queries"], text_emb=text_emb), exp["amp_pred_traj"])
    # init points given as (b, v, n, 2) are the same as whole tracks
    close(bundle.predict_traj(images, inp["init_queries"][:, :, 0], text_emb=text_emb), exp["amp_pred_traj"])
    close(bundle.act(images, inp["proprio"], text_emb=text_emb), exp["amp_actions"])
    # torch inputs give the same as numpy inputs
    close(bundle.act(torch.from_numpy(images), torch.from_numpy(inp["proprio"]), text_emb=torch.from_numpy(text_emb)),
          exp["amp_actions"])


def test_bundle_parts(bundle, small_fixture):
    _, inp, exp = small_fixture
    tokens = bundle.image_tokens(inp["images"])
    text = torch.from_numpy(inp["text_emb"])
    fd = bundle.forward_dynamics
    with torch.no_grad():
        cond = fd.get_cond_tokens(rearrange(tokens, "b v p d -> b (v p) d"), text)
        close(cond, exp["fd_cond_tokens"])
        idx, step_logits = fd.predict(cond, return_logits=True)
        close(step_logits, exp["fd_ar_step_logits"])
        loss, tf_logits = fd.loss(cond, torch.from_numpy(exp["amp_pred_indices"]))
        close(tf_logits, exp["fd_tf_logits"])
        close(loss, exp["fd_tf_loss"])
        velocities, logits = bundle.motion_tokenizer.decode(torch.from_numpy(exp["amp_pred_codes"]))
        np.testing.assert_array_equal(velocities.numpy(), exp["amp_pred_velocities"])
        close(logits, exp["amp_pred_rel_logits"])
        cond_id = bundle.inverse_dynamics.cond_tokens(
            rearrange(tokens, "b v p d -> b p (v d)"), text, torch.from_numpy(inp["proprio"]),
            torch.from_numpy(exp["amp_pred_codes"]))
        close(cond_id, exp["id_cond_tokens"])


def test_standalone_fd_id(small_fixture, tmp_path):
    """fd.pt and id.pt on their own (their own quantizer copy), in both formats."""
    d, inp, exp = small_fixture
    mt, mt_cfg = load_motion_tokenizer(d / "mt.pt")
    fd, _ = load_forward_dynamics(d / "fd.pt", mt_cfg)
    idm, _ = load_inverse_dynamics(d / "id.pt", mt_cfg)
    save_model(fd, tmp_path / "fd")
    save_model(idm, tmp_path / "id")
    bundle = AMPLIFY.load(d / "amplify.pt")
    tokens = bundle.image_tokens(inp["images"])
    text = torch.from_numpy(inp["text_emb"])
    for fd_model in (fd, load_forward_dynamics(tmp_path / "fd")[0]):
        with torch.no_grad():
            cond = fd_model.get_cond_tokens(rearrange(tokens, "b v p d -> b (v p) d"), text)
            close(cond, exp["fd_cond_tokens"])
            equal(fd_model.predict(cond), exp["amp_pred_indices"])
    for id_model in (idm, load_inverse_dynamics(tmp_path / "id")[0]):
        with torch.no_grad():
            actions = id_model(rearrange(tokens, "b v p d -> b p (v d)"), text, torch.from_numpy(inp["proprio"]),
                               torch.from_numpy(exp["amp_pred_codes"]))
        close(actions, exp["amp_actions"])


def test_assembled_bundle_matches(small_fixture, tmp_path):
    """A bundle assembled from mt/fd/id files plus the vision weights equals the original bundle."""
    d, inp, exp = small_fixture
    bundle = AMPLIFY.load(d / "amplify.pt")
    bundle.save(tmp_path / "b")
    assembled = AMPLIFY.from_parts(d / "mt.pt", d / "fd.pt", d / "id.pt", vision_weights=tmp_path / "b")
    close(assembled.act(inp["images"], inp["proprio"], text_emb=inp["text_emb"]), exp["amp_actions"])


def test_fsq_pin_matches_fixture_version():
    """The FSQ implementation is pinned to the version the fixtures were made with."""
    from importlib.metadata import version

    assert version("vector-quantize-pytorch") == "1.20.11"


def test_prepared_bundle_swaps_every_linear_and_refuses_to_save(small_fixture, tmp_path):
    model = AMPLIFY.load(small_fixture[0] / "amplify.pt").prepare_for_inference()
    assert not any(type(m) is torch.nn.Linear for m in model.modules())
    assert sum(isinstance(m, InferenceLinear) for m in model.modules()) > 10
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    with pytest.raises(RuntimeError, match="prepared for inference"):
        model.save(tmp_path / "out")
