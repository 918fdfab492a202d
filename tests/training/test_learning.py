"""The learning-side additions: motion metrics that do not hide failure, the moving-point loss
weight, the opt-in FSQ input normalization, and the vision trunk pretrained on scene states."""
from __future__ import annotations

import pytest
import torch

from amplify.config import MotionTokenizerConfig
from amplify.models.motion_tokenizer import MotionTokenizer
from amplify.tracks import points_to_velocities
from training.metrics import (
    MetricAverager, grid_velocities, motion_metrics, per_view_codebook_usage,
)
from training.trainers.mt import MTLoss

VIEWS = ["agentview", "eye_in_hand"]


def _tracks() -> torch.Tensor:
    """(1, 2, 3, 2, 2) normalized tracks on a 128 px image: agentview still; in eye_in_hand point 0
    moves 4 px per step along rows, point 1 stays."""
    px = torch.zeros(1, 2, 3, 2, 2)
    px[:] = 64.0
    px[0, 1, :, 0, 0] = torch.tensor([60.0, 64.0, 68.0])
    return (px - 64.0) / 64.0


def test_motion_metrics_per_view_moving_and_grid():
    tracks = _tracks()
    vel = points_to_velocities(tracks, 2)
    m = motion_metrics(vel, tracks, [128, 128], VIEWS, "t", grid_velocities(tracks, [128, 128], [15, 15]))
    assert float(m["t_eye_in_hand_moving_frac"]) == 0.5  # 2 of 4 in-image point-steps move
    assert float(m["t_agentview_moving_frac"]) == 0.0
    assert torch.isnan(m["t_agentview_moving_vel_err_px"])  # nothing moves there: no number, not 0
    assert float(m["t_eye_in_hand_moving_vel_err_px"]) == 0.0
    assert float(m["t_eye_in_hand_moving_vel_err_grid_px"]) == 0.0  # 4 px steps sit on the grid
    z = motion_metrics(torch.zeros_like(vel), tracks, [128, 128], VIEWS, "n")
    assert abs(float(z["n_eye_in_hand_moving_vel_err_px"]) - 4.0) < 1e-5  # the no-motion baseline
    assert float(z["n_eye_in_hand_moving_acc_2px"]) == 0.0
    assert float(z["n_eye_in_hand_acc_2px"]) == 0.5  # all points: the still one is right
    assert float(z["n_agentview_acc_1px"]) == 1.0
    avg = MetricAverager()
    avg.add(m, 1)
    assert "t_agentview_moving_vel_err_px" not in avg.result()  # NaN means "nothing measured", left out


def test_per_view_codebook_usage():
    idx = torch.tensor([[0, 0, 1, 2]])  # per-view tokenizer: view 0 tokens [0, 0], view 1 [1, 2]
    u = per_view_codebook_usage(idx, 4, VIEWS, per_view=True)
    assert float(u["codebook_usage_agentview"]) == 0.25 and float(u["codebook_usage_eye_in_hand"]) == 0.5
    assert float(per_view_codebook_usage(idx, 4, VIEWS, per_view=False)["codebook_usage_all"]) == 0.75


def _mt(**kw) -> MotionTokenizer:
    cfg = MotionTokenizerConfig(num_tracks=2, hidden_dim=16, num_heads=2, codebook_size=64, decoder_mlp_hidden_dim=8,
                                track_pred_horizon=3, true_horizon=3, dropout=0.0, **kw)
    torch.manual_seed(0)
    return MotionTokenizer(cfg)


def test_moving_weight_zero_is_the_original_loss_and_weights_moving_points():
    tracks = _tracks().repeat(2, 1, 1, 1, 1)
    plain, weighted = MTLoss(_mt()), MTLoss(_mt(), moving_weight=10.0)
    lp, _ = plain(dict(tracks=tracks))
    vel = points_to_velocities(tracks, 2)
    _, logits = plain.mt.decode(plain.mt.quantize(plain.mt.encode(vel))[0], fast=True)
    assert torch.allclose(lp, plain.mt.get_loss(None, logits, vel, tracks))
    per_point = plain.mt.loss_per_point(logits, tracks)  # (b, v, t, n)
    w = torch.ones_like(per_point[:, 1])
    w[:, :, 0] = 11.0  # the moving point of eye_in_hand
    expect = 0.9 * per_point[:, 0].mean() + 0.1 * (per_point[:, 1] * w).sum() / w.sum()
    assert torch.allclose(weighted.weighted_loss(logits, tracks), expect)


def test_moving_weights_per_view():
    tracks = _tracks().repeat(2, 1, 1, 1, 1)
    tracks[:, 0, :, 1, 1] = torch.tensor([-0.1, 0.0, 0.1])  # agentview point 1 moves 6.4 px per step
    loss = MTLoss(_mt(), moving_weight=10.0, moving_weights={"agentview": 30.0})
    assert loss.view_moving_weights == [30.0, 10.0]
    vel = points_to_velocities(tracks, 2)
    _, logits = loss.mt.decode(loss.mt.quantize(loss.mt.encode(vel))[0], fast=True)
    per_point = loss.mt.loss_per_point(logits, tracks)  # (b, v, t, n)
    wa, we = torch.ones_like(per_point[:, 0]), torch.ones_like(per_point[:, 1])
    wa[:, :, 1], we[:, :, 0] = 31.0, 11.0
    expect = 0.9 * (per_point[:, 0] * wa).sum() / wa.sum() + 0.1 * (per_point[:, 1] * we).sum() / we.sum()
    assert torch.allclose(loss.weighted_loss(logits, tracks), expect)
    same = MTLoss(loss.mt, moving_weight=10.0, moving_weights={"agentview": 10.0, "eye_in_hand": 10.0})
    assert torch.allclose(same.weighted_loss(logits, tracks), MTLoss(loss.mt, moving_weight=10.0).weighted_loss(logits, tracks))
    only = MTLoss(loss.mt, moving_weights={"agentview": 30.0})  # moving_weight 0: the named view only
    assert only.view_moving_weights == [30.0, 0.0]
    assert not torch.allclose(only(dict(tracks=tracks))[0], loss.mt.get_loss(None, logits, vel, tracks))
    try:
        MTLoss(loss.mt, moving_weights={"wrist": 1.0})
    except ValueError as e:
        assert "wrist" in str(e)
    else:
        raise AssertionError("an unknown view must be refused")


def test_fsq_input_norm_is_opt_in():
    assert MotionTokenizerConfig().fsq_input_norm is False  # original checkpoints keep their numbers
    vel = points_to_velocities(_tracks(), 2) * 50
    z_plain = _mt().encode(vel)
    z = _mt(fsq_input_norm=True).encode(vel)
    assert torch.allclose(z.mean(-1), torch.zeros(z.shape[:2]), atol=1e-5)
    assert torch.allclose(z.pow(2).mean(-1), torch.ones(z.shape[:2]), atol=1e-3)
    assert not torch.allclose(z_plain, z)


def test_fsq_input_std_is_opt_in_and_standardizes_the_fsq_input(tmp_path):
    from amplify.loading import load_motion_tokenizer, save_model
    from training.metrics import fsq_input_metrics

    assert MotionTokenizerConfig().fsq_input_std == 0.0  # original checkpoints keep their numbers
    plain = _mt()
    assert type(plain.quantize.project_in) is torch.nn.Linear
    assert "quantize.project_in.running_mean" not in plain.state_dict()
    mt = _mt(fsq_input_std=0.5)
    mt.load_state_dict(plain.state_dict(), strict=False)  # the same weights, names unchanged
    vel = points_to_velocities(torch.randn(8, 2, 3, 2, 2), 2)
    z = mt.encode(vel)
    x = mt.quantize.project_in(z)  # training: batch statistics
    assert torch.allclose(x.reshape(-1, x.shape[-1]).mean(0), torch.zeros(x.shape[-1]), atol=1e-5)
    assert torch.allclose(x.reshape(-1, x.shape[-1]).std(0, unbiased=False), torch.full((x.shape[-1],), 0.5), atol=1e-3)
    assert float(mt.quantize.project_in.running_mean.abs().sum()) > 0  # tracked
    raw = plain.quantize.project_in(plain.encode(vel))
    mt.eval()
    with torch.no_grad():
        p = mt.quantize.project_in
        expect = (raw - p.running_mean) * 0.5 / (p.running_var + p.eps).sqrt()
        assert torch.allclose(p(mt.encode(vel)), expect, atol=1e-5)  # eval: the running statistics
        m = fsq_input_metrics(mt.quantize, mt.encode(vel))
        assert 0.0 <= float(m["fsq_saturation"]) <= 1.0 and float(m["fsq_input_abs"]) > 0
        save_model(mt, tmp_path / "mt")
        again, cfg = load_motion_tokenizer(tmp_path / "mt")
        assert cfg.fsq_input_std == 0.5
        assert torch.equal(again.tokenize(vel)[1], mt.tokenize(vel)[1])  # config and running statistics round-trip


def test_fsq_saturation_counts_extreme_levels():
    from vector_quantize_pytorch import FSQ

    from training.metrics import fsq_input_metrics
    fsq = FSQ(levels=[8, 5])  # no projections: project_in is the identity
    z = torch.tensor([[0.0, 0.0], [10.0, -10.0], [10.0, 0.0], [-10.0, 0.0]])
    m = fsq_input_metrics(fsq, z)
    assert abs(float(m["fsq_saturation"]) - 4 / 8) < 1e-6  # 4 of the 8 values sit at an extreme level
    assert abs(float(m["fsq_input_abs"]) - 40 / 8) < 1e-6


def test_vision_pretraining_learns_and_probes(world_root, tmp_path):
    from tests.training.conftest import POINTS, SUITE
    from training.data.dataset import AmplifyDataset
    from training.vision import load_vision, save_vision
    from training.vision_pretrain import pretrain_vision

    def ds(sel):
        return AmplifyDataset(world_root, [sel], VIEWS, POINTS, 16, 1, frame_stride=8)

    enc, report = pretrain_vision(ds(f"[{SUITE}:traj0.67]"), ds(f"[{SUITE}:traj-0.34]"), image_size=64, steps=3,
                                  batch_size=4, progress=False)
    for part in ("random", "trained"):
        assert set(report[part]) == {"probe_ee_l1", "probe_ee_l1_no_image", "probe_objects_l1",
                                     "probe_objects_l1_no_image"}
    assert report["steps"] == 3 and report["final_loss"] > 0
    assert all(not p.requires_grad for p in enc.parameters())
    # trained channels-last, returned in the default layout (saved, exported and served as such)
    assert all(p.is_contiguous() for p in enc.parameters())
    path = save_vision(enc, tmp_path / "vision.safetensors")
    again = load_vision(path)
    x = torch.rand(2, 64, 64, 3)
    assert torch.equal(again(x), enc(x))  # trained weights and recalibrated BatchNorm round-trip


def test_pretrained_state_head_round_trips(world_root, tmp_path):
    """The pretraining's state head is saved beside the trunk and estimates what it did in training."""
    import numpy as np

    from tests.training.conftest import POINTS, SUITE
    from training.data.dataset import AmplifyDataset
    from training.vision import load_vision
    from training.vision_pretrain import (
        StateEstimator, frame_objects, head_error, head_predictions, load_frames, pretrain_vision, save_pretrained,
    )

    def ds(sel):
        return AmplifyDataset(world_root, [sel], VIEWS, POINTS, 16, 1, frame_stride=8)

    val = ds(f"[{SUITE}:traj-0.34]")
    enc, report = pretrain_vision(ds(f"[{SUITE}:traj0.67]"), val, image_size=64, steps=3, batch_size=4,
                                  progress=False, frame="relative", probe=False, objects="named")
    path = save_pretrained(enc, tmp_path / "vision.safetensors")
    x = torch.rand(2, 64, 64, 3)
    assert torch.equal(load_vision(path)(x), enc(x))  # the trunk's loaders ignore the head's keys
    est = StateEstimator(path)
    imgs, states = load_frames(val)
    objects = frame_objects(val)
    out = est.estimate(imgs.numpy(), ee=states[:, 0:3], objects=objects)
    assert out.shape == states.shape
    again = np.abs(out[:, 8:] - states[:, 8:]).mean()  # objects placed from the true effector
    # training resized the 128 px frames to uint8 64 px, the encoder resizes in float: nearly the same
    assert np.isclose(again, report["head_error"]["head_objects_l1_true_ee"], rtol=1e-2)
    raw = head_predictions(enc, enc.state_head["head"], imgs)
    assert set(head_error(enc.state_head, raw, states, objects)) == set(report["head_error"])


def test_steps_frame_adds_clipped_step_offsets_and_decodes_the_state(world_root, tmp_path):
    """frame="steps": the state as stored plus every object's offset from the effector in effector steps,
    clipped; the estimator decodes the state part only."""
    import numpy as np

    from tests.training.conftest import POINTS, SUITE
    from training.data.dataset import AmplifyDataset
    from training.vision_pretrain import STEPS_CLIP, StateEstimator, load_frames, pretrain_vision, save_pretrained, to_frame
    from world.scene import MAX_STEP, N_EE

    states = np.zeros((2, N_EE + 6))
    states[:, 0:3] = [0.1, 0.2, 0.3]
    states[0, N_EE:N_EE + 3] = [0.1 + MAX_STEP, 0.2, 0.3 - 2 * MAX_STEP]  # one step in x, two down
    states[1, N_EE:N_EE + 3] = [0.9, 0.2, 0.3]  # far: clipped
    out = to_frame(states, "steps")
    assert out.shape == (2, N_EE + 12)
    np.testing.assert_array_equal(out[:, :N_EE + 6], states)
    np.testing.assert_allclose(out[0, N_EE + 6:N_EE + 9], [1, 0, -2], atol=1e-9)
    assert out[1, N_EE + 6] == STEPS_CLIP

    def ds(sel):
        return AmplifyDataset(world_root, [sel], VIEWS, POINTS, 16, 1, frame_stride=8)

    val = ds(f"[{SUITE}:traj-0.34]")
    enc, report = pretrain_vision(ds(f"[{SUITE}:traj0.67]"), val, image_size=64, steps=2, batch_size=4,
                                  progress=False, frame="steps", probe=False)
    assert report["frame"] == "steps" and set(report["head_error"]) >= {"head_ee_l1", "head_objects_l1"}
    imgs, vstates = load_frames(val)
    est = StateEstimator(save_pretrained(enc, tmp_path / "v.safetensors")).estimate(imgs.numpy())
    assert est.shape == vstates.shape


def test_spatial_state_head_reads_the_finer_maps_and_round_trips(world_root, tmp_path):
    """``head="spatial"``: a soft-argmax over the maps of residual stages 2 and 3 (8x8 and 4x4 at 64 px,
    where the tokens are 2x2), saved with its levels; the estimator gives back what training measured."""
    import numpy as np

    from tests.training.conftest import POINTS, SUITE
    from training.data.dataset import AmplifyDataset
    from training.vision_pretrain import (StateEstimator, StateHead, load_frames, pretrain_vision, save_pretrained,
                                          spatial_soft_argmax, trunk_features)

    def ds(sel):
        return AmplifyDataset(world_root, [sel], VIEWS, POINTS, 16, 1, frame_stride=8)

    val = ds(f"[{SUITE}:traj-0.34]")
    enc, report = pretrain_vision(ds(f"[{SUITE}:traj0.67]"), val, image_size=64, steps=3, batch_size=4,
                                  progress=False, probe=False, head="spatial", keypoints=8)
    assert report["head"] == "spatial" and report["levels"] == [2, 3]
    head = enc.state_head["head"]
    feats, maps = trunk_features(enc.model, torch.rand(3, 3, 64, 64), head.levels)
    assert feats.shape == (3, 512, 2, 2) and [m.shape[1:] for m in maps] == [(128, 8, 8), (256, 4, 4)]
    x = torch.rand(3, 3, 64, 64)
    assert torch.equal(trunk_features(enc.model, x)[0], enc.model(x))  # the same trunk, read stage by stage
    path = save_pretrained(enc, tmp_path / "vision.safetensors")
    est = StateEstimator(path)
    assert est.info["head"].kind == "spatial" and est.info["head"].levels == (2, 3)
    imgs, states = load_frames(val)
    out = est.estimate(imgs.numpy(), ee=states[:, 0:3])
    again = np.abs(out[:, 8:] - states[:, 8:]).mean()
    assert np.isclose(again, report["head_error"]["head_objects_l1_true_ee"], rtol=1e-2)

    # the soft-argmax: a map with one hot position gives that position's centre, in [-1, 1]
    logits = torch.full((1, 1, 4, 8), -1e4)
    logits[0, 0, 3, 1] = 0.0
    np.testing.assert_allclose(spatial_soft_argmax(logits)[0, 0].numpy(), [(1.5 / 8) * 2 - 1, (3.5 / 4) * 2 - 1])
    try:
        StateHead(2, 4, 512, 5, "spatial", levels=(4,))
    except ValueError as e:
        assert "levels" in str(e)
    else:
        raise AssertionError("a stage that does not exist was accepted")


def test_vision_pretraining_curve_measures_without_changing_training(world_root):
    """``eval_every`` logs the held-out head error during training; its last point is the final report's
    error, and the training (losses, final weights) is the same as without it."""
    from tests.training.conftest import POINTS, SUITE
    from training.data.dataset import AmplifyDataset
    from training.vision_pretrain import pretrain_vision

    def ds(sel):
        return AmplifyDataset(world_root, [sel], VIEWS, POINTS, 16, 1, frame_stride=8)

    train, val = ds(f"[{SUITE}:traj0.67]"), ds(f"[{SUITE}:traj-0.34]")
    kw = dict(image_size=64, steps=5, batch_size=4, progress=False, probe=False)
    enc, report = pretrain_vision(train, val, eval_every=2, **kw)
    plain, ref = pretrain_vision(train, val, **kw)
    assert [p["step"] for p in report["curve"]] == [2, 4, 5]
    assert "curve" not in ref
    assert report["curve"][-1]["head_objects_l1"] == report["head_error"]["head_objects_l1"]
    assert report["head_error"] == ref["head_error"] and report["final_loss"] == ref["final_loss"]
    assert report["curve"][0]["head_objects_l1"] != report["curve"][-1]["head_objects_l1"]
    x = torch.rand(2, 64, 64, 3)
    assert torch.equal(enc(x), plain(x))


def test_vision_pretraining_under_bf16_autocast(world_root):
    """``amp="bf16"`` trains the trunk under bfloat16 autocast; the trained trunk still serves in float32."""
    import pytest

    from tests.training.conftest import POINTS, SUITE
    from training.data.dataset import AmplifyDataset
    from amplify.devices import native_bf16
    from training.vision_pretrain import _amp_dtype, pretrain_vision

    def ds(sel):
        return AmplifyDataset(world_root, [sel], VIEWS, POINTS, 16, 1, frame_stride=8)

    enc, report = pretrain_vision(ds(f"[{SUITE}:traj0.67]"), None, image_size=64, steps=2, batch_size=4,
                                  progress=False, probe=False, amp="bf16")
    assert report["amp"] == "bf16" and report["final_loss"] > 0
    assert all(p.dtype == torch.float32 for p in enc.parameters())
    assert enc(torch.rand(1, 64, 64, 3)).dtype == torch.float32
    assert _amp_dtype("auto") == (torch.bfloat16 if native_bf16("cpu") else None) and _amp_dtype("off") is None
    with pytest.raises(ValueError, match="amp must be"):
        _amp_dtype("fp16")


def test_pixel_supervised_keypoints_become_the_encoders_keypoint_tokens(world_root, tmp_path):
    """``pixel_weight``: the spatial head's first keypoints are fitted to where each object slot is in each
    view (the renderer's projection, checked against its id buffer); the saved encoder ends its tokens
    with those keypoints, which FD and ID then read, and its state head still estimates the state."""
    import numpy as np

    from amplify.models.vision import trunk_features
    from tests.training.conftest import POINTS, SUITE
    from training.data.dataset import AmplifyDataset
    from training.vision import load_vision
    from training.vision_pretrain import StateEstimator, load_frames, pixel_targets, pretrain_vision, save_pretrained
    from world.render import VIEWS as RENDER_VIEWS, entity_table, render
    from world.suites import get_task
    from world.tasks import demo_init_states

    task = get_task("put_the_red_cube_in_the_blue_bowl")
    scene = task.new_scene()
    state = demo_init_states(task, 1, seed=3)[0].copy()
    state[0:3] = (0.45, 0.4, 0.1)
    scene.set_state(state)
    names = tuple(o.name for o in scene.objects)
    pix, inside = pixel_targets(scene.get_state()[None].astype(np.float32), [names], RENDER_VIEWS)
    assert inside.all()
    ent = entity_table(scene)
    for v, view in enumerate(RENDER_VIEWS):
        ids = render(scene, view, ent)[1]
        for j in range(len(names)):
            rows, cols = np.nonzero(ids == 5 + j)  # the object's visible pixels: its centre within a pixel
            centre = ((cols.mean() + 0.5) / 128 * 2 - 1, (rows.mean() + 0.5) / 128 * 2 - 1)
            np.testing.assert_allclose(pix[0, v, j], centre, atol=2 / 128)
    pix_ee, inside_ee = pixel_targets(scene.get_state()[None].astype(np.float32), [names], RENDER_VIEWS, effector=True)
    np.testing.assert_array_equal(pix_ee[:, :, :-1], pix)  # the effector is one slot more, after the objects
    assert inside_ee[0, 0, -1] and not inside_ee[0, 1, -1]  # masked in the wrist view, which rides on it
    rows, cols = np.nonzero(render(scene, "agentview", ent)[1] == 1)  # id 1: the palm
    np.testing.assert_allclose(pix_ee[0, 0, -1], ((cols.mean() + 0.5) / 64 - 1, (rows.mean() + 0.5) / 64 - 1), atol=2 / 128)

    def ds(sel):
        return AmplifyDataset(world_root, [sel], VIEWS, POINTS, 16, 1, frame_stride=8)

    val = ds(f"[{SUITE}:traj-0.34]")
    with pytest.raises(ValueError, match="spatial"):
        pretrain_vision(ds(f"[{SUITE}:traj0.67]"), val, image_size=64, steps=1, progress=False, probe=False, pixel_weight=1.0)
    with pytest.raises(ValueError, match="pixel_effector needs pixel_weight"):
        pretrain_vision(ds(f"[{SUITE}:traj0.67]"), val, image_size=64, steps=1, progress=False, probe=False,
                        head="spatial", pixel_effector=True)
    enc, report = pretrain_vision(ds(f"[{SUITE}:traj0.67]"), val, image_size=64, steps=2, batch_size=4, progress=False,
                                  probe=False, head="spatial", levels=[1, 2], keypoints=8, pixel_weight=1.0,
                                  pixel_effector=True)
    slots = (load_frames(val)[1].shape[1] - 8) // 3 + 1  # the objects and the effector
    assert report["pixel_weight"] == 1.0 and report["pixel_effector"]
    assert enc.cfg.keypoints == slots and enc.cfg.keypoint_levels == [1, 2] and enc.cfg.num_tokens == 4 + 2 * slots
    x = torch.rand(2, 64, 64, 3)
    tokens = enc(x)
    assert tokens.shape == (2, 4 + 2 * slots, 512)
    head = enc.state_head["head"]  # the encoder's keypoints are the head's first ones
    _, maps = trunk_features(enc.model, x.permute(0, 3, 1, 2), head.levels)
    kp = head.spatial_keypoints(maps, 1)  # per level (1, 2 views, 8, 2): the two images as one sample's views
    torch.testing.assert_close(tokens[:, 4:, :2], torch.cat([k.reshape(2, 8, 2)[:, :slots] for k in kp], 1))
    path = save_pretrained(enc, tmp_path / "vision.safetensors")
    assert torch.equal(load_vision(path)(x), tokens)
    imgs, states = load_frames(val)
    assert StateEstimator(path).estimate(imgs.numpy()).shape == states.shape


def test_resize_in_chunks_matches_one_pass():
    from training.vision_pretrain import _resize

    imgs = torch.randint(0, 256, (5, 2, 32, 32, 3), dtype=torch.uint8)
    assert torch.equal(_resize(imgs, 16, chunk=3), _resize(imgs, 16, chunk=1000))
    assert _resize(imgs, 16).shape == (5, 2, 16, 16, 3)


def test_position_probe_recovers_a_linear_map_and_beats_the_mean():
    import numpy as np

    from training.vision_pretrain import PROBE_EE, PROBE_OBJECTS, position_probe

    g = torch.Generator().manual_seed(0)
    feats, vfeats = torch.randn(300, 40, generator=g), torch.randn(100, 40, generator=g)
    mix = torch.randn(40, 20, generator=g)
    states, vstates = (feats @ mix).numpy().astype(np.float32), (vfeats @ mix).numpy().astype(np.float32)
    out = position_probe(feats, states, vfeats, vstates, alpha=0.01)
    for name in ("ee", "objects"):
        assert out[f"probe_{name}_l1"] < 0.05 * out[f"probe_{name}_l1_no_image"]
    assert max(PROBE_OBJECTS) < states.shape[1] and max(PROBE_EE) < states.shape[1]
