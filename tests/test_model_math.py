"""Track math, masks, the FSQ table, and cached vs uncached prediction."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from amplify import AMPLIFY, ConfigError, MotionTokenizer, MotionTokenizerConfig, fsq_levels, points_to_velocities, velocities_to_points
from amplify.config import FSQ_LEVELS, apply_overrides
from amplify.layers import causal_cond_mask, diag_cond_mask, make_mask
from amplify.presets import small
from amplify.tracks import normalize_pixels, relative_class_targets, relative_classes_to_velocities, unnormalize_points


def test_velocity_round_trip_torch_and_numpy():
    pts = torch.randn(2, 3, 9, 5, 2)
    vel = points_to_velocities(pts, time_dim=2)
    assert vel.shape == (2, 3, 8, 5, 2)
    back = velocities_to_points(vel, time_dim=2, init_points=pts[:, :, :1])
    torch.testing.assert_close(back, pts, atol=1e-5, rtol=0)
    np_back = velocities_to_points(vel.numpy(), time_dim=2, init_points=pts[:, :, :1].numpy())
    assert isinstance(np_back, np.ndarray)
    np.testing.assert_allclose(np_back, pts.numpy(), atol=1e-5)


def test_pixel_normalization_round_trip():
    px = np.array([[0.0, 0.0], [64.0, 64.0], [127.0, 3.0]], dtype=np.float32)
    p = normalize_pixels(px, (128, 128))
    np.testing.assert_allclose(p[1], [0, 0])
    np.testing.assert_allclose(unnormalize_points(p, (128, 128)), px, atol=1e-5)


def test_relative_classes_round_trip():
    size, grid = (128, 128), (15, 15)
    prev = torch.rand(1000, 2) * 1.6 - 0.8
    step_px = torch.randint(-7, 8, (1000, 2)).float()
    nxt = prev + step_px / 64
    cls = relative_class_targets(prev, nxt, size, grid)
    assert cls.min() >= 0 and cls.max() < 225
    vel = relative_classes_to_velocities(cls, size, grid)
    # decoded velocity equals the rounded pixel displacement (up to rounding of the start point)
    assert (vel * 64 - step_px).abs().max() <= 1.0 + 1e-5
    # large displacements clamp to the grid's edge
    far = relative_class_targets(torch.zeros(1, 2), torch.ones(1, 2) * 0.9, size, grid)
    assert far.item() == 224


def test_masks():
    assert torch.equal(make_mask("causal", 3), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool))
    assert make_mask("full", 4).all()
    assert torch.equal(diag_cond_mask(3, 0), torch.eye(3, dtype=torch.bool))
    m = causal_cond_mask(5, 2)
    assert m[0, 1] and m[1, 0]  # condition tokens see each other
    assert not m[1, 2] and not m[0, 4]  # and never a later token
    assert m[4].all() and not m[2, 3]
    d = diag_cond_mask(4, 2)
    assert d[3, :2].all() and d[3, 3] and not d[3, 2]
    with pytest.raises(ValueError):
        make_mask("nope", 3)


@pytest.mark.parametrize("size", sorted(FSQ_LEVELS))
def test_fsq_table_every_size(size):
    levels = fsq_levels(size)
    assert levels == FSQ_LEVELS[size]
    cfg = MotionTokenizerConfig(num_tracks=4, hidden_dim=32, num_heads=4, codebook_size=size, decoder_mlp_hidden_dim=8)
    mt = MotionTokenizer(cfg).eval()
    n_codes = int(np.prod(levels))
    idx = torch.arange(n_codes)[None]
    assert mt.quantize.indices_to_codes(idx).shape == (1, n_codes, 32)
    # index -> level codes -> index is the identity on all real codes
    level_codes = mt.quantize._indices_to_codes(idx)
    assert torch.equal(mt.quantize.codes_to_indices(level_codes).long(), idx)
    # indices past the real codes wrap onto a code (the original's behaviour for 2048 -> 1920)
    if n_codes < size:
        wrapped = mt.quantize._indices_to_codes(torch.tensor([[n_codes]]))
        assert torch.equal(wrapped, mt.quantize._indices_to_codes(torch.tensor([[0]])))


def test_unsupported_codebook_size_is_a_clear_error():
    with pytest.raises(ConfigError, match="codebook_size 1000 is not supported"):
        MotionTokenizerConfig(codebook_size=1000)
    with pytest.raises(ConfigError, match="causal_encoder"):
        MotionTokenizerConfig(causal_encoder="sometimes")


@pytest.mark.parametrize("per_view", [False, True])
@pytest.mark.parametrize("causal", [True, "diag", False])
def test_tokenizer_options_run_and_decode(per_view, causal):
    cfg = MotionTokenizerConfig(num_tracks=6, hidden_dim=32, num_heads=4, codebook_size=256, per_view=per_view,
                                causal_encoder=causal, decoder_mlp_hidden_dim=16, track_pred_horizon=5, true_horizon=4)
    mt = MotionTokenizer(cfg).eval()
    tracks = torch.rand(3, 2, 5, 6, 2) * 2 - 1
    vel = points_to_velocities(tracks)
    with torch.no_grad():
        x_recon, idx, logits = mt(vel)
        assert idx.shape == (3, cfg.seq_len) and x_recon.shape == vel.shape
        torch.testing.assert_close(mt.decode_logits(mt.indices_to_codes(idx), fast=True),
                                   mt.decode_logits(mt.indices_to_codes(idx), fast=False), atol=1e-4, rtol=0)
    loss = mt.train().get_loss(*mt(vel)[::2], gt_vel=vel, gt_traj=tracks)
    loss.backward()
    assert torch.isfinite(loss)


def test_causal_encoder_ignores_the_future():
    cfg = MotionTokenizerConfig(num_tracks=4, hidden_dim=32, num_heads=4, codebook_size=64, track_pred_horizon=6,
                                decoder_mlp_hidden_dim=8, causal_encoder=True)
    mt = MotionTokenizer(cfg).eval()
    vel = torch.randn(1, 2, 5, 4, 2) * 0.05
    vel2 = vel.clone()
    vel2[:, :, 3:] += 0.3
    with torch.no_grad():
        torch.testing.assert_close(mt.encode(vel)[:, :3], mt.encode(vel2)[:, :3])
        assert not torch.allclose(mt.encode(vel)[:, 3:], mt.encode(vel2)[:, 3:])


def test_image_conditioned_tokenizer():
    cfg = MotionTokenizerConfig(num_tracks=4, hidden_dim=32, num_heads=4, codebook_size=64, track_pred_horizon=5,
                                decoder_mlp_hidden_dim=8, cond_on_img=True)
    mt = MotionTokenizer(cfg).eval()
    vel = torch.randn(2, 2, 4, 4, 2) * 0.05
    images = torch.rand(2, 2, 32, 32, 3)
    with torch.no_grad():
        z1 = mt.encode(vel, images)
        z2 = mt.encode(vel, torch.rand(2, 2, 32, 32, 3))
    assert z1.shape == (2, 4, 32) and not torch.allclose(z1, z2)
    with pytest.raises(ValueError, match="image-conditioned"):
        mt.encode(vel)


@pytest.mark.parametrize("codebook", [64, 2048])
def test_cached_and_uncached_prediction_agree(codebook):
    cfg = apply_overrides(small(), [f"motion_tokenizer.codebook_size={codebook}", f"forward_dynamics.codebook_size={codebook}",
                                    "forward_dynamics.num_layers=3"])
    torch.manual_seed(1)
    model = AMPLIFY(cfg).eval()
    # larger weights than init so that predictions actually vary with the input
    with torch.no_grad():
        for p in model.forward_dynamics.parameters():
            p.mul_(8.0)
    images = torch.rand(3, 2, 64, 64, 3)
    text = torch.randn(3, 512)
    i_cached, _ = model.predict_codes(images, text_emb=text, cached=True)
    i_ref, _ = model.predict_codes(images, text_emb=text, cached=False)
    assert torch.equal(i_cached, i_ref)
    assert len(set(i_cached.flatten().tolist())) > 1
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    t1, _ = model.predict_codes(images, text_emb=text, ar_sampling="topk", generator=g1, cached=True)
    t2, _ = model.predict_codes(images, text_emb=text, ar_sampling="topk", generator=g2, cached=False)
    assert torch.equal(t1, t2)
    torch.testing.assert_close(model.act(images, torch.randn(3, 9) * 0, text_emb=text, cached=True),
                               model.act(images, torch.randn(3, 9) * 0, text_emb=text, cached=False))


def test_mask_unused_logits_never_picks_a_wrapped_index():
    cfg = apply_overrides(small(), ["motion_tokenizer.codebook_size=2048", "forward_dynamics.codebook_size=2048",
                                    "forward_dynamics.mask_unused_logits=true"])
    model = AMPLIFY(cfg).eval()
    with torch.no_grad():
        model.forward_dynamics.unembed.bias[1920:] = 100.0
    idx, _ = model.predict_codes(torch.rand(2, 2, 32, 32, 3), text_emb=torch.randn(2, 512))
    assert idx.max() < 1920


def test_fd_text_scale_multiplies_the_text_embedding_and_defaults_to_the_original():
    assert small().forward_dynamics.text_scale == 1.0
    plain = AMPLIFY(small()).eval()
    scaled = AMPLIFY(apply_overrides(small(), ["forward_dynamics.text_scale=4.0"])).eval()
    scaled.load_state_dict(plain.state_dict())
    tokens, text = torch.randn(2, 98, 512), torch.randn(2, 512)
    with torch.no_grad():
        cond = scaled.forward_dynamics.get_cond_tokens(tokens, text)
        torch.testing.assert_close(cond, plain.forward_dynamics.get_cond_tokens(tokens, 4.0 * text))
        assert not torch.allclose(cond[:, -1], plain.forward_dynamics.get_cond_tokens(tokens, text)[:, -1])


def test_fd_text_select_adds_tokens_the_instruction_chooses_and_defaults_to_the_original():
    """``text_select`` = K: K more condition tokens, each a convex combination of the projected image tokens
    whose weights depend on the text only; 0 (the original) adds no token and no weight."""
    plain = AMPLIFY(small()).eval()
    assert small().forward_dynamics.text_select == 0
    assert not any("select" in k for k in plain.state_dict())
    model = AMPLIFY(apply_overrides(small(), ["forward_dynamics.text_select=3"])).eval()
    fd = model.forward_dynamics
    assert fd.cfg.cond_seq_len == plain.forward_dynamics.cfg.cond_seq_len + 3
    tokens, text = torch.randn(2, 98, 512), torch.randn(2, 512)
    with torch.no_grad():
        img = fd.img_proj(tokens)
        cond = fd.get_cond_tokens(tokens, text)
        assert cond.shape == (2, 98 + 1 + 3, fd.cfg.hidden_dim)
        torch.testing.assert_close(cond[:, -3:], img.mean(1, keepdim=True).expand(-1, 3, -1))  # zero init: the mean
        fd.select_logits.weight.normal_(0, 1.0)
        cond = fd.get_cond_tokens(tokens, text)
        weights = torch.softmax(fd.select_logits(text).reshape(2, 3, 98), -1)
        torch.testing.assert_close(cond[:, -3:], weights @ img)
        other = fd.get_cond_tokens(tokens, torch.randn(2, 512))
        assert not torch.allclose(other[:, -3:], cond[:, -3:])  # another instruction selects otherwise
        torch.testing.assert_close(other[:, :98], cond[:, :98])  # the image tokens do not depend on it
    images = torch.rand(2, 2, 32, 32, 3)
    idx, _ = model.predict_codes(images, text_emb=text)
    assert idx.shape == (2, fd.cfg.pred_seq_len)
    assert torch.equal(idx, model.predict_codes(images, text_emb=text, cached=False)[0])  # the KV cache holds
    with pytest.raises(Exception, match="text_select"):
        apply_overrides(small(), ["forward_dynamics.text_select=-1"])
    # text_select_last=n: only the last n tokens of each view are candidates
    last = AMPLIFY(apply_overrides(small(), ["forward_dynamics.text_select=2", "forward_dynamics.text_select_last=5"])).eval()
    fd = last.forward_dynamics
    with torch.no_grad():
        fd.select_logits.weight.normal_(0, 1.0)
        img = fd.img_proj(tokens)  # (2, 98, h): view 0 tokens 0..48, view 1 49..97
        weights = torch.softmax(fd.select_logits(text).reshape(2, 2, 10), -1)
        candidates = torch.cat([img[:, 44:49], img[:, 93:98]], dim=1)
        torch.testing.assert_close(fd.get_cond_tokens(tokens, text)[:, -2:], weights @ candidates)
    with pytest.raises(Exception, match="text_select_last"):
        apply_overrides(small(), ["forward_dynamics.text_select_last=50"])


def test_text_table_and_uint8_images(small_bundle):
    emb = torch.randn(2, 512)
    small_bundle.set_instructions(["open the drawer", "close the drawer"], emb)
    img8 = (np.random.RandomState(0).rand(1, 2, 32, 32, 3) * 255).astype(np.uint8)
    a1 = small_bundle.act(img8, np.zeros((1, 9), np.float32), text=["close the drawer"])
    a2 = small_bundle.act(img8.astype(np.float32) / 255, np.zeros((1, 9), np.float32), text_emb=emb[1:])
    torch.testing.assert_close(a1, a2)
    assert a1.shape == (1, 16, 7)
    with pytest.raises(KeyError, match="unknown instruction"):
        small_bundle.act(img8, np.zeros((1, 9), np.float32), text=["fly"])


def test_overrides():
    cfg = apply_overrides(small(), ["forward_dynamics.num_layers=5", "motion_tokenizer.views=[\"a\",\"b\"]"])
    assert cfg.forward_dynamics.num_layers == 5 and cfg.motion_tokenizer.views == ["a", "b"]
    with pytest.raises(ConfigError, match="unknown config key"):
        apply_overrides(small(), ["forward_dynamics.nope=1"])


def test_decoder_weight_parts_are_remade_when_weights_change():
    """The velocity-only decoder keeps its weight-only parts between calls: a weight changed in place
    (an optimizer step, load_state_dict) or a prepared model must still match the original form."""
    from amplify.inference import prepare_for_inference

    torch.manual_seed(0)
    mt = MotionTokenizer(small().motion_tokenizer).eval()
    codes = mt.indices_to_codes(torch.randint(0, mt.cfg.codebook_size, (2, mt.cfg.seq_len)))
    with torch.no_grad():
        before = mt.decode_velocities(codes)
        torch.testing.assert_close(before, mt.decode(codes, fast=False)[0], rtol=0, atol=0)
        mt.decoder.track_pos_emb.weight.mul_(3.0)
        mt.decoder.decoder_proj.bias.add_(torch.linspace(-2, 2, mt.decoder.decoder_proj.bias.numel()))
        after = mt.decode_velocities(codes)
        torch.testing.assert_close(after, mt.decode(codes, fast=False)[0], rtol=0, atol=0)
        assert not torch.equal(after, before)
        prepare_for_inference(mt)
        torch.testing.assert_close(mt.decode_velocities(codes), after, rtol=0, atol=0)


def keypoint_bundle_config():
    """The small preset at 64 px with 2 keypoint tokens per stage 1 and 2 (2x2 patches + 4 per view)."""
    from amplify.config import VisionEncoderConfig

    cfg = small()
    cfg.vision = VisionEncoderConfig(image_size=64, num_tokens=8, keypoints=2, keypoint_levels=[1, 2])
    cfg.forward_dynamics.img_tokens_per_view = 8
    cfg.inverse_dynamics.num_img_tokens = 8
    return cfg


def test_vision_keypoint_tokens_follow_the_soft_argmax():
    """keypoints > 0: the patches, then one token per keypoint and stage whose first two entries are the
    map's soft-argmax (x, y); the config refuses a token count that does not add up, and a bundle whose
    FD or ID expects another count."""
    from amplify.config import BundleConfig, VisionEncoderConfig
    from amplify.models.vision import VisionEncoder, keypoint_embedding, spatial_soft_argmax, trunk_features

    torch.manual_seed(0)
    enc = VisionEncoder(VisionEncoderConfig(image_size=64, num_tokens=4 + 3 * 2, keypoints=3, keypoint_levels=[1, 2])).eval()
    x = torch.rand(2, 64, 64, 3)
    tokens = enc(x)
    assert tokens.shape == (2, 10, 512)
    trunk = x.permute(0, 3, 1, 2)
    feats, maps = trunk_features(enc.model, trunk, [1, 2])
    torch.testing.assert_close(tokens[:, :4], feats.flatten(2).transpose(1, 2))  # the patches as before
    xy = spatial_soft_argmax(enc.keypoint_maps[1](maps[1]) / enc.keypoint_log_temperature[1].exp())
    torch.testing.assert_close(tokens[:, 7:, :2], xy)  # stage 2's keypoints come after stage 1's
    emb = keypoint_embedding(torch.tensor([[[0.25, -0.5]]]), 32)
    assert emb.shape == (1, 1, 32) and torch.equal(emb[0, 0, :2], torch.tensor([0.25, -0.5]))
    torch.testing.assert_close(emb[0, 0, 2], torch.sin(torch.tensor(torch.pi * 0.25)))  # f = 1, x
    assert torch.equal(emb[0, 0, 26:], torch.zeros(6))  # 2 + 4 x 6 frequencies, then zeros

    with pytest.raises(ConfigError, match="num_tokens 9 != 4 patches"):
        VisionEncoderConfig(image_size=64, num_tokens=9, keypoints=2, keypoint_levels=[1, 2])
    with pytest.raises(ConfigError, match="keypoint_levels"):
        VisionEncoderConfig(image_size=64, num_tokens=6, keypoints=2, keypoint_levels=[4])
    cfg = keypoint_bundle_config()
    cfg.check()
    AMPLIFY(cfg).act(np.zeros((1, 2, 64, 64, 3), np.uint8), np.zeros((1, 9), np.float32), text_emb=np.zeros((1, 512), np.float32))
    cfg.forward_dynamics.img_tokens_per_view = 4
    with pytest.raises(ConfigError, match="img_tokens_per_view 4 != vision.num_tokens 8"):
        BundleConfig(cfg.motion_tokenizer, cfg.forward_dynamics, cfg.inverse_dynamics, cfg.vision).check()
