"""Layouts of the generated files, and generation speed."""
import json
import os
import time

import h5py
import numpy as np
import pytest

from world.env import BuiltinEnv
from world.generate import generate, rollout, track_method
from world.suites import SUITES, TASKS, get_text_embedding
from world.tasks import get_init_states
from world.tracks import uniform_grid

VIEWS = ("agentview", "eye_in_hand")


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("data"))
    st = generate("builtin_all", root, demos_per_task=2, num_points=400, horizon=16, workers=1)
    return root, st


def test_demo_file_layout(gen):
    root, st = gen
    assert st["demos"] == 2 * len(SUITES["builtin_all"])
    for name in SUITES["builtin_all"]:
        path = os.path.join(root, "builtin_all", f"{name}_demo.hdf5")
        with h5py.File(path, "r") as f:
            d = f["data"]
            assert d.attrs["num_demos"] == 2
            info = json.loads(d.attrs["problem_info"])
            assert info["language_instruction"] == TASKS[name].instruction == d.attrs["language_instruction"]
            assert sorted(d.keys()) == ["demo_0", "demo_1"]
            g = d["demo_0"]
            T = g["actions"].shape[0]
            assert g["actions"].shape == (T, 7) and g["actions"].dtype == np.float64
            assert np.abs(g["actions"][:, :3]).max() <= 1 and set(np.unique(g["actions"][:, 6])) <= {-1.0, 1.0}
            for k in ("agentview_rgb", "eye_in_hand_rgb"):
                assert g["obs"][k].shape == (T, 128, 128, 3) and g["obs"][k].dtype == np.uint8
            assert g["obs/joint_states"].shape == (T, 7) and g["obs/gripper_states"].shape == (T, 2)
            assert g["dones"][-1] == 1 and g["dones"][:-1].sum() == 0 and g["rewards"][-1] == 1
            assert g.attrs["num_samples"] == T and 10 < T <= TASKS[name].max_steps


def test_images_stored_upside_down_and_match_env(gen):
    root, _ = gen
    name = "put_the_red_cube_in_the_blue_bowl"
    with h5py.File(os.path.join(root, "builtin_all", f"{name}_demo.hdf5"), "r") as f:
        g = f["data/demo_0"]
        init = g.attrs["init_state"][:]
        stored = {v: g[f"obs/{v}_rgb"][:] for v in VIEWS}
        actions, states = g["actions"][:], g["states"][:]
        joints = g["obs/joint_states"][:]
    np.testing.assert_array_equal(init, states[0])
    ep = rollout(TASKS[name], init, seed=0)  # demo_0 is the first try, seed 0
    np.testing.assert_array_equal(ep["actions"], actions)
    for v in VIEWS:
        np.testing.assert_array_equal(stored[v], ep[f"{v}_rgb"][:, ::-1])  # vertically flipped
    # the env reproduces the stored frames when replaying the stored actions
    env = BuiltinEnv(name)
    obs = env.set_init_state(states[0])
    for t in range(len(actions)):
        np.testing.assert_array_equal(obs["agentview_image"], stored["agentview"][t])
        np.testing.assert_array_equal(obs["robot0_eye_in_hand_image"], stored["eye_in_hand"][t])
        np.testing.assert_allclose(obs["robot0_joint_pos"], joints[t])
        obs, r, done, _ = env.step(actions[t])
    assert done and env.check_success()


def test_track_file_layout(gen):
    root, _ = gen
    assert track_method(400, 16) == "uniform_400_reinit_16"
    name = "push_the_red_cube_to_the_left_edge"
    with h5py.File(os.path.join(root, "builtin_all", f"{name}_demo.hdf5"), "r") as f:
        T = f["data/demo_1/actions"].shape[0]
        up = f["data/demo_1/obs/agentview_rgb"][:][:, ::-1]  # upright
        init = f["data/demo_1/states"][0]
    path = os.path.join(root, "builtin_all", "uniform_400_reinit_16", f"{name}_demo", "demo_1.hdf5")
    with h5py.File(path, "r") as f:
        for v in VIEWS:
            tr, vis = f[f"root/{v}/tracks"][:], f[f"root/{v}/vis"][:]
            assert tr.shape == (T, 16, 400, 2) and tr.dtype == np.float32
            assert vis.shape == (T, 16, 400) and set(np.unique(vis)) <= {0.0, 1.0}
            np.testing.assert_allclose(tr[:, 0], np.broadcast_to(uniform_grid(400), (T, 400, 2)), atol=1e-3)
            assert np.isfinite(tr).all()
            out = (np.rint(tr) < 0).any(-1) | (np.rint(tr) > 127).any(-1)
            assert not vis[out].any()  # points that leave the image (wrist view zooming in) are not visible
            if v == "agentview":  # only forearm points (it reaches the image's top) can leave the image
                assert out.mean() < 0.02 and tr[..., 0].min() >= -0.5 and tr[..., 0].max() <= 127.5
        tr = f["root/agentview/tracks"][:]
    # (col, row) order, upright frame: points on the red cube stay red in the upright image
    scene = TASKS[name].new_scene()
    scene.set_state(init)
    q = uniform_grid(400)
    red = (up[..., 0] > 120) & (up[..., 1] < 60) & (up[..., 2] < 60)  # (T, 128, 128)
    on = red[0, np.rint(q[:, 1]).astype(int), np.rint(q[:, 0]).astype(int)]
    assert on.sum() >= 1
    later = np.rint(tr[0, 8, on]).astype(int)  # (n, 2) col, row
    assert red[8, later[:, 1], later[:, 0]].all()
    assert not red[8, later[:, 0], later[:, 1]].all() or np.array_equal(later[:, 0], later[:, 1])


def test_text_files(gen):
    root, _ = gen
    for name in SUITES["builtin_all"]:
        with h5py.File(os.path.join(root, "builtin_all", "text", f"{name}.hdf5"), "r") as f:
            e = f["text_emb"][:]
            assert e.shape == (512,) and e.dtype == np.float32
            assert f.attrs["instruction"] == TASKS[name].instruction
            np.testing.assert_array_equal(e, get_text_embedding(TASKS[name].instruction))


def test_generation_speed_50_demos(tmp_path):
    names = SUITES["builtin_all"][::2][:5]  # 5 tasks across the families x 10 demos
    t0 = time.perf_counter()
    st = generate("builtin_all", str(tmp_path), demos_per_task=10, tasks=names, workers=1)
    sec = time.perf_counter() - t0
    print(f"generated {st['demos']} demos ({st['steps']} steps, tracks 400 pts x 16, 2 views) in {sec:.1f} s, 1 worker")
    assert st["demos"] == 50
    assert sec < 120


def test_dart_demos_store_labels_and_executed_actions(tmp_path):
    from world.expert import ScriptedExpert

    name = SUITES["builtin_pick"][0]
    generate("builtin_all", str(tmp_path), demos_per_task=1, tracks=False, tasks=[name], dart=0.3)
    with h5py.File(os.path.join(tmp_path, "builtin_all", f"{name}_demo.hdf5"), "r") as f:
        g = f["data/demo_0"]
        labels, ran, states = g["actions"][:], g["actions_executed"][:], g["states"][:]
        frames = g["obs/agentview_rgb"][:]
    assert np.abs(labels - ran)[:, :3].max() > 0.05 and np.array_equal(labels[:, 3:], ran[:, 3:])
    scene = TASKS[name].new_scene()
    env = BuiltinEnv(name)
    obs = env.set_init_state(states[0])
    for t in range(len(labels)):
        scene.set_state(states[t])
        np.testing.assert_array_equal(ScriptedExpert(TASKS[name]).act(scene), labels[t])  # labels: the expert's
        np.testing.assert_array_equal(obs["agentview_image"], frames[t])  # executed actions replay the frames
        obs, _, done, _ = env.step(ran[t])
    assert done


def test_dart_tracks_are_the_expert_motion_or_the_executed_one(tmp_path):
    from world.generate import expert_future_tracks

    name = SUITES["builtin_push"][0]
    roots = {k: str(tmp_path / k) for k in ("executed", "expert")}
    for kind, root in roots.items():
        generate("builtin_all", root, demos_per_task=1, num_points=36, horizon=16, tasks=[name], dart=0.3,
                 dart_tracks=kind)
    tracks = {}
    for kind, root in roots.items():
        with h5py.File(os.path.join(root, "builtin_all", track_method(36, 16), f"{name}_demo", "demo_0.hdf5")) as f:
            tracks[kind] = {v: (f[f"root/{v}/tracks"][:], f[f"root/{v}/vis"][:]) for v in VIEWS}
    states = {}
    for kind, root in roots.items():
        with h5py.File(os.path.join(root, "builtin_all", f"{name}_demo.hdf5"), "r") as f:
            states[kind] = f["data/demo_0/states"][:]
    np.testing.assert_array_equal(states["executed"], states["expert"])  # the same episode, other tracks
    states = states["expert"]
    for t in (0, len(states) // 2):
        want, vis = expert_future_tracks(TASKS[name], states[t], VIEWS, uniform_grid(36), 16)
        for i, v in enumerate(VIEWS):
            np.testing.assert_array_equal(tracks["expert"][v][0][t], want[i])
            np.testing.assert_array_equal(tracks["expert"][v][1][t], vis[i].astype(np.float32))
    wrist = "eye_in_hand"
    assert np.abs(tracks["executed"][wrist][0] - tracks["expert"][wrist][0]).max() > 1.0  # different futures
    with pytest.raises(ValueError, match="dart_tracks"):
        generate("builtin_all", str(tmp_path / "x"), demos_per_task=1, tasks=[name], dart=0.3, dart_tracks="nope")
