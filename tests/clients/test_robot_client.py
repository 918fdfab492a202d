"""The robot client: execution of chunks (unit), and whole episodes on the built-in world against a
live server (the same code path as LIBERO; test_libero.py runs real LIBERO)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from clients.libero.evaluate import EvalConfig, evaluate, gripper_hold
from clients.libero.execution import ChunkedExecutor, GripperLatch, TemporalAggregator
from clients.libero.video import draw_tracks, query_grid


def test_temporal_aggregation_weights_oldest_most():
    agg = TemporalAggregator(k=0.5)
    agg.add(0, np.full((3, 2), 0.0))
    assert np.allclose(agg.action(0), 0.0)
    agg.add(1, np.full((3, 2), 1.0))
    w = np.exp(-0.5 * np.arange(2))
    assert np.allclose(agg.action(1), (w[0] * 0 + w[1] * 1) / w.sum())  # oldest (0.0) weighs more
    agg.add(2, np.full((3, 2), 2.0))
    w = np.exp(-0.5 * np.arange(3))
    assert np.allclose(agg.action(2), (w * [0, 1, 2]).sum() / w.sum())
    agg.add(3, np.full((3, 2), 3.0))  # the chunk from step 0 (length 3) no longer covers step 3
    w = np.exp(-0.5 * np.arange(3))
    assert np.allclose(agg.action(3), (w * [1, 2, 3]).sum() / w.sum())


def test_chunked_replanning_queries_every_n_steps():
    ex = ChunkedExecutor(replan_every=2)
    queries, actions = [], []
    for t in range(5):
        if ex.needs_query(t):
            queries.append(t)
            ex.add(t, np.arange(4)[:, None] + 10 * t)
        actions.append(ex.action(t)[0])
    assert queries == [0, 2, 4] and actions == [0, 1, 20, 21, 40]
    long = ChunkedExecutor(replan_every=10)  # never past the chunk's end
    long.add(0, np.zeros((3, 1)))
    assert [long.needs_query(t) for t in range(4)] == [False, False, False, True]


def test_gripper_latch_keeps_a_changed_command_for_hold_steps():
    """A sticky gripper: the first command passes; a change is kept ``hold`` steps whatever comes next."""
    wanted = [-1, 1, -1, 1, -1, -1, -1, 0.2, -0.3]  # a policy dithering at a grasp (> 0 close)
    latch = GripperLatch(hold=3)
    run = [latch(np.array([0.5, 0, 0, 0, 0, 0, g]))[6] for g in wanted]
    assert run == [-1, 1, 1, 1, -1, -1, -1, 1, 1]
    action = np.array([0.5, -0.2, 0.1, 0, 0, 0, -1.0])
    assert np.array_equal(latch(action)[:6], action[:6])  # only the gripper entry is touched, the input kept
    off = GripperLatch(hold=0)
    assert [off(np.array([0.0] * 6 + [g]))[6] for g in (-1, 0.4, -0.2)] == [-1, 0.4, -0.2]  # passes through
    latch.reset()
    assert latch(np.array([0.0] * 6 + [0.7]))[6] == 1  # a new episode starts free
    with pytest.raises(ValueError, match="hold"):
        GripperLatch(hold=-1)


def test_robot_client_takes_the_gripper_hold_the_model_names():
    cfg = EvalConfig(server="http://unused")
    assert gripper_hold(cfg, {"gripper_hold": 4}) == 4 and gripper_hold(cfg, {}) == 0
    assert gripper_hold(EvalConfig(server="http://unused", gripper_hold=0), {"gripper_hold": 4}) == 0  # off by choice


def test_track_overlay_draws_inside_the_image():
    img = np.zeros((32, 32, 3), np.uint8)
    tracks = np.stack([query_grid(4), query_grid(4) + 0.2, query_grid(4) + 5.0])  # (H=3, n=4, 2), last step off-image
    out = draw_tracks(img, tracks)
    assert out.shape == img.shape and out.any() and not img.any()


@pytest.mark.parametrize("execution", ["temporal", "chunk"])
def test_builtin_episodes_against_live_server(server, tmp_path, execution):
    cfg = EvalConfig(server=server.url, api_key=server.api_key, env="builtin", execution=execution,
                     replan_every=4, max_steps=8, video_dir=str(tmp_path / "videos") if execution == "chunk" else None)
    rep = evaluate(cfg, "builtin_push", tasks=["0", "push_the_blue_cube_to_the_right_edge"], episodes=2, num_envs=2)
    assert [t["task_index"] for t in rep["tasks"]] == [0, 1]
    assert all(t["episodes"] == 2 for t in rep["tasks"])
    suite = rep["suites"]["builtin_push"]
    assert suite["episodes"] == 4 and 0 <= suite["success_rate"] <= 1
    queries = rep["act_latency_ms"]["count"]
    assert queries == (rep["steps"] if execution == "temporal" else 4 * 2)  # 8 steps / replan 4 = 2 per episode
    lat = rep["act_latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert rep["steps_per_second"] > 0
    if execution == "chunk":
        videos = [v for t in rep["tasks"] for v in t["videos"]]
        assert len(videos) == 4 and all(os.path.getsize(v) > 1000 for v in videos)


def test_cli_builtin_sends_instruction_text_and_writes_json(server, tmp_path):
    out = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "clients.libero", "--server", server.url, "--api-key", server.api_key,
           "--env", "builtin", "--suite", "builtin_lift", "--tasks", "0", "--episodes", "1", "--max-steps", "3",
           "--output", str(out)]
    res = subprocess.run(cmd, cwd=server.repo, env={**os.environ, "PYTHONPATH": str(server.repo)},
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    rep = json.loads(out.read_text())
    assert rep["env"] == "builtin" and rep["act_latency_ms"]["count"] == 3 and rep["steps"] == 3
    bad = subprocess.run(cmd[:-2] + ["--suite", "libero_nope"], cwd=server.repo,
                         env={**os.environ, "PYTHONPATH": str(server.repo)}, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "unknown built-in suite" in bad.stderr


def test_unknown_instruction_fails_before_any_environment_is_built(server):
    from clients import NotFoundError
    from clients.libero.envs import TaskInfo
    from clients.libero.evaluate import _check_instructions, connect

    cfg = EvalConfig(server=server.url, api_key=server.api_key, env="builtin")
    with connect(cfg) as c:
        meta = c.metadata()
    known = TaskInfo("builtin", "builtin_push", 0, "t", meta["instructions"][0], 5, 1)
    _check_instructions(cfg, meta, [known])  # listed by the model: no request, no error
    with pytest.raises(NotFoundError) as e:
        _check_instructions(cfg, meta, [known, TaskInfo("builtin", "s", 1, "u", "juggle three plates", 5, 1)])
    assert e.value.field == "text"


class _FlipFlopClient:
    """A stand-in for AmplifyClient whose chunks' gripper command flips sign on every call."""

    def __init__(self, gripper_hold: int):
        self.meta = {"views": ["agentview", "eye_in_hand"], "gripper_hold": gripper_hold, "action_horizon": 4}
        self.calls = 0

    def metadata(self) -> dict:
        return self.meta

    def act(self, images, proprio, **kwargs) -> np.ndarray:
        chunk = np.zeros((4, 7), np.float32)
        chunk[:, -1] = 1.0 if self.calls % 2 == 0 else -1.0
        self.calls += 1
        return chunk


class _RecordingEnv:
    """A stand-in LIBERO env: fixed observations; records the actions it is stepped with."""

    def __init__(self):
        self.actions: list[np.ndarray] = []

    def _obs(self) -> dict:
        img = np.zeros((16, 16, 3), np.uint8)
        return {"agentview_image": img, "robot0_eye_in_hand_image": img,
                "robot0_joint_pos": np.zeros(7), "robot0_gripper_qpos": np.zeros(2)}

    def reset(self):
        return self._obs()

    def set_init_state(self, state):
        return self._obs()

    def step(self, action):
        self.actions.append(np.asarray(action))
        return self._obs(), 0.0, False, {}

    def check_success(self) -> bool:
        return False


@pytest.mark.parametrize("hold, flag", [(4, None), (0, None), (4, 0)])
def test_the_episode_loop_runs_the_gripper_through_the_latch_the_model_names(hold, flag):
    """``amplify-libero``'s episode loop: with the model's ``gripper_hold`` (and no ``--gripper-hold``) a changed
    gripper command runs ``hold`` steps although the policy flips it every step; 0 (the model's or the flag's)
    runs the policy's commands as they come."""
    from clients.libero.envs import TaskInfo
    from clients.libero.evaluate import run_episode

    client, env = _FlipFlopClient(hold), _RecordingEnv()
    cfg = EvalConfig(server="http://unused", env="builtin", execution="chunk", replan_every=1, max_steps=12,
                     gripper_hold=flag)
    info = TaskInfo("builtin", "builtin_pick", 0, "t", "pick up the cube", 12, 1)
    result = run_episode(client, env, np.zeros(1), info, cfg, 0)
    ran = [float(a[-1]) for a in env.actions]
    asked = [1.0 if k % 2 == 0 else -1.0 for k in range(12)]
    assert result.steps == 12 and client.calls == 12
    if hold and flag is None:
        assert ran == [1.0] + [-1.0] * 5 + [1.0] * 5 + [-1.0]  # each change held 4 steps, then the next one
    else:
        assert ran == asked
