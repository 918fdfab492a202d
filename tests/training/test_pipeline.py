"""The trainers end to end on built-in-world files (fit: checkpoints, logs, plots), the bundle
command, the bundle in AMPLIFY (act with text), and closed-loop evaluation."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from tests.training.conftest import MT_TINY, VISION_TINY, tiny_overrides
from training.train_command import train

ID_TINY = {"model.hidden_dim": 32, "model.num_heads": 2, "model.num_layers": 1}
FD_TINY = {"model.num_heads": 2, "model.num_layers": 1, "model.mask_unused_logits": "true"}


@pytest.fixture(scope="module")
def parts(world_root, tmp_path_factory):
    """MT, then FD (frozen MT targets, random calibrated vision), then ID (true codes; validated on FD's
    codes too), a few steps each."""
    runs = tmp_path_factory.mktemp("runs")
    out = {}
    out["mt"] = train("mt", tiny_overrides(world_root, runs / "mt", plots="true", **MT_TINY))
    mt = runs / "mt" / "latest"
    out["fd"] = train("fd", tiny_overrides(world_root, runs / "fd", mt=mt, plots="true", **VISION_TINY, **FD_TINY))
    vision = runs / "fd" / "vision.safetensors"
    out["id"] = train("id", tiny_overrides(world_root, runs / "id", mt=mt, fd=runs / "fd" / "latest",
                                           **{"vision.weights": vision}, **ID_TINY))
    return runs, out


def test_checkpoints_logs_and_plots(parts):
    runs, summaries = parts
    from amplify.loading import load_forward_dynamics, load_inverse_dynamics, load_motion_tokenizer

    for part in ("mt", "fd", "id"):
        latest = runs / part / "latest"
        for name in ("config.json", "model.safetensors", "train_state.pt", "train_config.json"):
            assert (latest / name).is_file(), (part, name)
        state = torch.load(latest / "train_state.pt", weights_only=True)  # plain containers only
        assert state["epoch"] == 1 and state["step"] == 3
        with open(runs / part / "log.csv") as f:
            rows = list(csv.DictReader(f))
        assert {r["split"] for r in rows} == {"train", "val"}
        assert summaries[part]["step"] == 3 and np.isfinite(summaries[part]["train"]["loss"])
    mt, mt_cfg = load_motion_tokenizer(runs / "mt" / "latest")
    assert mt_cfg.num_tracks == 16 and mt_cfg.hidden_dim == 32
    fd, fd_cfg = load_forward_dynamics(runs / "fd" / "latest")
    assert fd_cfg.img_tokens_per_view == 4 and fd_cfg.hidden_dim == 32  # derived from the MT and vision
    idm, id_cfg = load_inverse_dynamics(runs / "id" / "latest")
    assert id_cfg.num_img_tokens == 4 and id_cfg.num_code_tokens == mt_cfg.seq_len
    assert (runs / "mt" / "plots" / "curves.png").is_file() and (runs / "mt" / "plots" / "tracks_mt.png").is_file()
    assert (runs / "fd" / "plots" / "tracks_fd.png").is_file()
    val = summaries["fd"]["val"]
    assert 0 <= val["token_acc"] <= 1 and "pred_track_acc_2px" in val
    assert 0 <= val["token_acc_first"] <= 1  # where autoregressive errors start
    assert 0 <= val.get("token_acc_after_right_prefix", 0.0) <= 1
    assert {"track_acc_1px", "codebook_perplexity"} <= set(summaries["mt"]["val"])
    assert "action_l1" in summaries["id"]["val"]
    assert np.isfinite(summaries["id"]["val"]["action_l1_fd_codes"])  # trained on true codes, served FD's


def test_bundle_command_and_act(parts, tmp_path):
    from amplify_cli.main import main
    from amplify.policy import AMPLIFY

    runs, _ = parts
    out = tmp_path / "bundle"
    rc = main(["bundle", "--mt", str(runs / "mt" / "latest"), "--fd", str(runs / "fd" / "latest"),
               "--id", str(runs / "id" / "latest"), "--vision", str(runs / "fd" / "vision.safetensors"), "--out", str(out)])
    assert rc == 0
    model = AMPLIFY.load(out)
    assert "push the red cube to the left edge" in model.instructions and len(model.instructions) == 4
    assert model.cfg.vision.image_size == 64
    # the bundle carries the exact vision weights the FD was trained with
    from training.vision import load_vision
    enc = load_vision(runs / "fd" / "vision.safetensors")
    for k, v in enc.model.state_dict().items():
        torch.testing.assert_close(model.img_encoder.model.state_dict()[k], v, rtol=0, atol=0)
    images = np.random.default_rng(0).integers(0, 255, (2, 2, 128, 128, 3), dtype=np.uint8)
    proprio = np.zeros((2, 9), np.float32)
    a = model.act(images, proprio, text=["push the red cube to the left edge"] * 2)
    b = model.act(images, proprio, text_emb=model.embed_text(["push the red cube to the left edge"] * 2))
    assert a.shape == (2, 16, 7) and torch.equal(a, b)


def test_eval_world_runs_closed_loop(parts, tmp_path):
    from training.bundle import build_bundle
    from training.eval_world import bundle_policy, evaluate, random_policy

    runs, _ = parts
    model = build_bundle(runs / "mt" / "latest", runs / "fd" / "latest", runs / "id" / "latest",
                         runs / "fd" / "vision.safetensors")
    res = evaluate(bundle_policy(model), "builtin_push", episodes=2, execute=8, max_steps=16, progress=False)
    assert res["episodes"] == 2 and res["policy_calls"] == 2 and 0 <= res["success_rate"] <= 1
    rnd = evaluate(random_policy(0), "builtin_push", episodes=2, max_steps=16, progress=False)
    assert set(rnd["per_task"]) == set(res["per_task"])


def test_train_command_rejects_bad_keys_and_shows_config(capsys):
    from amplify_cli.main import main

    assert main(["train", "mt", "model.no_such_key=1"]) == 2
    assert "model.no_such_key" in capsys.readouterr().out
    assert main(["train", "id", "model.head=flow", "--show-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["model"]["head"] == "flow" and shown["optim"]["betas"] == [0.9, 0.95]


def test_train_command_starts_from_a_saved_run(capsys, tmp_path):
    """``--from RUN``: a run's saved settings (its directory or train_config.json), then the overrides."""
    from amplify_cli.main import main

    assert main(["train", "mt", "epochs=7", "moving_weights={\"agentview\":200}", "--show-config"]) == 0
    (tmp_path / "train_config.json").write_text(capsys.readouterr().out)
    assert main(["train", "mt", "epochs=16", "--from", str(tmp_path), "--show-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["epochs"] == 16 and shown["moving_weights"] == {"agentview": 200.0}
    assert main(["train", "mt", "--from", str(tmp_path / "train_config.json"), "--show-config"]) == 0
    assert json.loads(capsys.readouterr().out)["epochs"] == 7
    assert main(["train", "mt", "--from", str(tmp_path / "nope"), "--show-config"]) == 2
    assert "nope" in capsys.readouterr().out


def test_fd_trains_the_vision_trunk_when_not_frozen(parts, world_root, tmp_path):
    """``vision.frozen=false``: the trunk's weights move with FD's loss, its BatchNorm statistics do not,
    and the trained trunk is written where the ID and the bundle read it; the ID refuses the switch."""
    from training.vision import load_vision

    runs, _ = parts
    start = runs / "fd" / "vision.safetensors"  # the frozen run's (seeded random, calibrated) trunk
    out = tmp_path / "fd"
    trunk = {"vision.weights": start, "vision.frozen": "false", "vision.lr_scale": 1.0}
    summary = train("fd", tiny_overrides(world_root, out, mt=runs / "mt" / "latest", **FD_TINY, **trunk))
    assert summary["step"] == 3 and np.isfinite(summary["train"]["loss"])
    assert not (out / "cache").exists()  # images are encoded every batch, nothing cached
    before, after = load_vision(start).model.state_dict(), load_vision(out / "vision.safetensors").model.state_dict()
    moved = [k for k in before if k.endswith("weight") and not torch.equal(before[k], after[k])]
    assert len(moved) > 10  # convolutions and BatchNorm affines trained
    stats = [k for k in before if "running_" in k]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)
    with pytest.raises(ValueError, match="forward dynamics only"):
        train("id", tiny_overrides(world_root, tmp_path / "id", mt=runs / "mt" / "latest",
                                   **{"vision.weights": start, "vision.frozen": "false"}, **ID_TINY))


def test_fd_with_a_trained_trunk_resumes_exactly(parts, world_root, tmp_path):
    """The trained trunk is in every checkpoint: 2 epochs straight == 1 epoch, stop, resume 1 more."""
    from training.vision import load_vision

    runs, _ = parts
    trunk = {"vision.weights": runs / "fd" / "vision.safetensors", "vision.frozen": "false", "vision.lr_scale": 1.0,
             "epochs": 2, "max_steps_per_epoch": 2}
    args = dict(mt=runs / "mt" / "latest", **FD_TINY, **trunk)
    train("fd", tiny_overrides(world_root, tmp_path / "a", **args))
    train("fd", tiny_overrides(world_root, tmp_path / "b", stop_after=1, **args))
    resumed = train("fd", tiny_overrides(world_root, tmp_path / "b", resume="true", **args))
    assert resumed["step"] == 4
    for name in ("vision.safetensors", "latest/vision.safetensors"):
        a = load_vision(tmp_path / "a" / name).model.state_dict()
        b = load_vision(tmp_path / "b" / name).model.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
