"""The privileged state-conditioned forward dynamics diagnostic (training/state_fd.py): its samples are the
demonstrations' exact-state features with the tokenizer's codes of their stored tracks, it trains, and its
policy feeds its codes to the bundle's inverse dynamics."""
import copy

import h5py
import numpy as np
import torch

from amplify.tracks import points_to_velocities
from training.data.dataset import AmplifyDataset
from training.learnability import features
from training.state_fd import (
    StateConditionedFD, StateFDPolicy, demonstration_samples, perceived_state, token_accuracy, train_state_fd,
)
from world import SUITES, BuiltinEnv, get_suite
from world.scene import N_EE

from tests.training.conftest import HORIZON, POINTS, SUITE

VIEWS = ["agentview", "eye_in_hand"]


def test_perceived_state_replaces_only_the_objects():
    state = np.arange(N_EE + 6, dtype=np.float64)
    est = -np.ones_like(state)
    got = perceived_state(state, est)
    np.testing.assert_array_equal(got[:N_EE], state[:N_EE])
    np.testing.assert_array_equal(got[N_EE:], est[N_EE:])
    np.testing.assert_array_equal(perceived_state(state, None), state)


def test_samples_train_and_act(world_root, small_bundle):
    model = copy.deepcopy(small_bundle)  # 16 tracks, two views, horizon 16: the fixture's data
    tasks = get_suite(SUITE)
    ds = AmplifyDataset(world_root, [f"[{SUITE}:traj]"], VIEWS, POINTS, HORIZON, 1, frame_stride=4)
    x, idx, tids = demonstration_samples(ds, model.motion_tokenizer, tasks)
    assert len(x) == len(idx) == len(tids) == len(ds)
    # the first sample: the learnability features of its stored state, the codes of its stored tracks
    rec = ds.demos[int(ds.samples[0][0])]
    with h5py.File(rec.file, "r") as f:
        state = np.asarray(f["data"][rec.key]["states"])[int(ds.samples[0][1])]
    task = tasks[int(tids[0])]
    scene = task.new_scene()
    scene.set_state(state)
    np.testing.assert_allclose(x[0].numpy(), features(scene, task, [t.name for t in tasks]))
    tracks = torch.from_numpy(rec.tracks[int(ds.samples[0][1])])[None].float()
    want = model.motion_tokenizer.tokenize(points_to_velocities(tracks, time_dim=2))[1]
    torch.testing.assert_close(idx[:1], want)

    text = torch.randn(len(tasks), model.cfg.forward_dynamics.text_embed_dim)
    fd = StateConditionedFD(model.cfg.forward_dynamics, model.motion_tokenizer.quantize, x.shape[1], x.mean(0), x.std(0) + 1e-3)
    quantizer = {k: v.clone() for k, v in model.motion_tokenizer.quantize.state_dict().items()}
    train_state_fd(fd, x, idx, text[tids], epochs=1, batch_size=8, log=lambda s: None)
    for k, v in model.motion_tokenizer.quantize.state_dict().items():  # the tokenizer's quantizer stays as it was
        torch.testing.assert_close(v, quantizer[k])
    acc = token_accuracy(fd, x, idx, text[tids])
    assert set(acc) == {"tokens", "first"} and 0.0 <= acc["first"] <= 1.0

    env = BuiltinEnv(SUITES[SUITE][0], render=False)
    env.set_init_state(env.get_init_states()[0])
    chunk = StateFDPolicy(model, fd, tasks, text).act_envs([env], [0])
    assert chunk.shape == (1, model.cfg.inverse_dynamics.action_horizon, 7)
    assert np.isfinite(chunk).all()


def test_command_trains_and_reports(world_root, small_bundle, tmp_path):
    import json

    from training.state_fd import main

    model = copy.deepcopy(small_bundle)
    names = SUITES[SUITE]
    model.set_instructions([get_suite(SUITE)[i].instruction for i in range(len(names))], torch.randn(len(names), 512))
    model.save(tmp_path / "b")
    out = tmp_path / "r.json"
    assert main(["--model", str(tmp_path / "b"), "--data", str(world_root), "--suite", SUITE, "--val-fraction", "0.34",
                 "--frame-stride", "4", "--epochs", "1", "--per-task", "1", "--execute", "4", "--json", str(out),
                 "--no-progress"]) == 0
    rep = json.loads(out.read_text())
    assert rep["privileged"] is True and set(rep["held_out_tokens"]) == {"tokens", "first"}
    assert rep["closed_loop"]["4"]["episodes"] == len(names)
