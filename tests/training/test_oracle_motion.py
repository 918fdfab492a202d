"""The privileged oracle-motion diagnostic: the expert's future tracks, computed from a state, are the
demonstrations' stored tracks, and the policy feeds their codes to the bundle's inverse dynamics."""
import copy

import h5py
import numpy as np
import pytest
import torch

from amplify.tracks import points_to_velocities
from training.data.tracks import preprocess_tracks, read_tracks, track_dir
from training.eval_world import observation
from training.oracle_motion import OracleMotionPolicy
from world import SUITES, BuiltinEnv
from world.generate import expert_future_tracks, track_method
from world.suites import get_task
from world.tracks import uniform_grid

from tests.training.conftest import HORIZON, POINTS, SUITE

VIEWS = ["agentview", "eye_in_hand"]


def _demo(root, task: str):
    with h5py.File(root / SUITE / f"{task}_demo.hdf5", "r") as f:
        states = np.asarray(f["data/demo_0/states"])
    raw = read_tracks(track_dir(root, SUITE, track_method(POINTS, HORIZON), task) / "demo_0.hdf5", VIEWS)
    return states, raw  # (T, D), (T, v, H, N, 2)


def test_expert_future_tracks_are_the_stored_tracks(world_root):
    task = SUITES[SUITE][1]
    states, raw = _demo(world_root, task)
    for t in (0, len(states) // 2, len(states) - 3):  # the last: past success the last frame repeats
        got = expert_future_tracks(get_task(task), states[t], VIEWS, uniform_grid(POINTS), HORIZON)[0]
        np.testing.assert_array_equal(got, raw[t])


def test_oracle_policy_feeds_the_true_codes(world_root, small_bundle):
    model = copy.deepcopy(small_bundle)  # 16 tracks, two views, horizon 16: the fixture's data
    names = SUITES[SUITE]
    model.set_instructions([get_task(n).instruction for n in names], torch.randn(len(names), 512))
    task = names[0]
    states, raw = _demo(world_root, task)
    env = BuiltinEnv(task, render=False)
    env.set_init_state(states[5])
    policy = OracleMotionPolicy(model, observation)
    tracks = torch.from_numpy(preprocess_tracks(raw[5:6], [128, 128], POINTS, HORIZON))
    want = model.motion_tokenizer.tokenize(points_to_velocities(tracks, time_dim=2))[0]
    torch.testing.assert_close(policy.oracle_codes([env]), want)
    chunk = policy.act_envs([env], [0])
    assert chunk.shape == (1, model.cfg.inverse_dynamics.action_horizon, 7)
    zero = OracleMotionPolicy(model, observation, codes="zero").act_envs([env], [0])
    assert not np.allclose(chunk, zero)  # the codes reach the inverse dynamics
    with pytest.raises(ValueError):
        OracleMotionPolicy(model, observation, codes="nope")


def test_eval_world_id_codes_flag(small_bundle, tmp_path, capsys):
    import json

    from amplify_cli.main import main

    model = copy.deepcopy(small_bundle)
    names = SUITES["builtin_lift"]
    model.set_instructions([get_task(n).instruction for n in names], torch.randn(len(names), 512))
    model.save(tmp_path / "b")
    out = tmp_path / "r.json"
    assert main(["eval-world", "--model", str(tmp_path / "b"), "--suite", "builtin_lift", "--episodes", "1",
                 "--id-codes", "oracle", "--baselines", "none", "--json", str(out), "--no-progress"]) == 0
    assert "diagnostic" in capsys.readouterr().out
    res = json.loads(out.read_text())
    agreement = res["diagnostic"].pop("fd_agreement")
    assert res["diagnostic"] == {"id_codes": "oracle", "id_images": True, "privileged": True}
    assert res["model"]["episodes"] == 1 and res["model"]["policy_calls"] >= 1
    assert agreement["calls"] == res["model"]["policy_calls"]
    assert len(agreement["per_position"]) == model.cfg.forward_dynamics.pred_seq_len
    assert agreement["first_k_all_equal"][0] == 1.0
    assert main(["eval-world", "--model", str(tmp_path / "b"), "--episodes", "1", "--oracle-tokens", "2",
                 "--baselines", "none", "--no-progress"]) == 2  # goes with --id-codes oracle


def test_oracle_prefix_lets_the_forward_dynamics_finish_the_codes(world_root, small_bundle):
    model = copy.deepcopy(small_bundle)
    names = SUITES[SUITE]
    model.set_instructions([get_task(n).instruction for n in names], torch.randn(len(names), 512))
    states, _ = _demo(world_root, names[0])
    env = BuiltinEnv(names[0], render=False)
    env.set_init_state(states[3])
    seq_len = model.cfg.forward_dynamics.pred_seq_len
    oracle = OracleMotionPolicy(model, observation)
    whole = OracleMotionPolicy(model, observation, oracle_tokens=seq_len)
    none = OracleMotionPolicy(model, observation, oracle_tokens=0)
    served = OracleMotionPolicy(model, observation, codes="fd")
    np.testing.assert_allclose(whole.act_envs([env], [0]), oracle.act_envs([env], [0]), atol=1e-6)
    np.testing.assert_allclose(none.act_envs([env], [0]), served.act_envs([env], [0]), atol=1e-5)
    first = OracleMotionPolicy(model, observation, oracle_tokens=1)
    first.act_envs([env], [0])
    assert first.calls == 1 and first.agreement()["calls"] == 1
    with pytest.raises(ValueError, match="oracle_tokens"):
        OracleMotionPolicy(model, observation, codes="fd", oracle_tokens=1)
    with pytest.raises(ValueError, match="oracle_tokens"):
        OracleMotionPolicy(model, observation, oracle_tokens=seq_len + 1)
