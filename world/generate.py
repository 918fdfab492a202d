"""Generate demonstrations, point tracks and text embeddings in LIBERO / AMPLIFY layouts.

    python -m world.generate --suite builtin_push --out DIR --demos-per-task 10

writes, for every task of the suite (``<task>`` is the task name, e.g.
``push_the_red_cube_to_the_left_edge``)::

    DIR/<suite>/<task>_demo.hdf5                               LIBERO demonstrations
    DIR/<suite>/uniform_<N>_reinit_<H>/<task>_demo/demo_<i>.hdf5  AMPLIFY tracks
    DIR/<suite>/text/<task>.hdf5                                text embedding

Images in the demo files are stored UPSIDE DOWN (as LIBERO stores them); track
coordinates are (col, row) pixels of the UPRIGHT image. See docs/world.md.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor

import h5py
import numpy as np

from .expert import ScriptedExpert
from .render import VIEWS, entity_table, render
from .suites import SUITES, get_text_embedding
from .tasks import Task, check_success, demo_init_states, distractor_starts, shared_demo_init_states
from .tracks import compute_tracks, uniform_grid

COMP = dict(compression="gzip", compression_opts=1)


def rollout(task: Task, init_state: np.ndarray, seed: int = 0, noise: float = 0.0,
            policy=None, max_steps: int | None = None, render_images: bool = True, dart: float = 0.0,
            rgb: bool = True) -> dict:
    """Run the scripted expert (or ``policy(scene) -> (7,)``) from ``init_state`` until success.

    Returns a dict of per-step arrays (T = number of actions; obs arrays are the obs before
    each action): actions (T, 7), states (T, D), joint_states (T, 7), gripper_states (T, 2),
    ee_pos (T, 3), entities (T, E, 3), and per view ``<view>_rgb`` (T, 128, 128, 3) upright
    and ``<view>_ids`` (T, 128, 128) (``rgb=False``: the ids only); plus ``success`` and ``num_steps``.

    ``dart`` > 0 (disturbances for augmenting robot trajectories): the action that runs is the
    expert's plus gaussian noise of that std on dims 0-2 (seeded), so episodes visit states off the
    expert's path; ``actions`` stay the expert's (the labels), ``executed`` (T, 7) holds what ran."""
    scene = task.new_scene()
    scene.set_state(init_state)
    act = policy or ScriptedExpert(task, noise=noise, seed=seed).act
    rng = np.random.default_rng([seed, 1])  # the disturbances' stream
    keys = ["actions", "executed", "states", "joint_states", "gripper_states", "ee_pos", "entities"]
    if render_images:
        keys += [f"{v}_{k}" for v in VIEWS for k in (("rgb", "ids") if rgb else ("ids",))]
    out: dict[str, list] = {k: [] for k in keys}
    success = False
    for _ in range(max_steps or task.max_steps):
        ent = entity_table(scene)
        out["states"].append(scene.get_state())
        out["joint_states"].append(scene.joint_pos())
        out["gripper_states"].append(scene.gripper_qpos())
        out["ee_pos"].append(scene.ee.copy())
        out["entities"].append(ent)
        if render_images:
            for v in VIEWS:
                img, ids = render(scene, v, ent, rgb=rgb)
                if rgb:
                    out[f"{v}_rgb"].append(img)
                out[f"{v}_ids"].append(ids)
        a = np.asarray(act(scene), np.float64)
        run = a.copy()
        if dart > 0:
            run[:3] = np.clip(a[:3] + rng.normal(0.0, dart, 3), -1.0, 1.0)
        out["actions"].append(a)
        out["executed"].append(run)
        scene.step(run)
        if check_success(task, scene):
            success = True
            break
    res = {k: np.stack(v) for k, v in out.items()}
    res["success"] = success
    res["num_steps"] = len(out["actions"])
    return res


def expert_future_tracks(task: Task, state: np.ndarray, views: list[str] | tuple[str, ...], queries: np.ndarray,
                         horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Tracks (v, horizon, N, 2) float32 (pixel col, row, upright) and visibility (v, horizon, N) of the
    scripted expert's next ``horizon`` steps from ``state``, as a demonstration from that state stores them
    (past success the last frame repeats). The expert reads only the state, so this is its intended motion
    from any state, on or off its own path."""
    ep = rollout(task, state, max_steps=horizon, render_images=True, rgb=False)
    out = [compute_tracks(v, ep[f"{v}_ids"], ep["entities"], ep["ee_pos"], horizon, queries) for v in views]
    return np.stack([tr[0] for tr, _ in out]), np.stack([vis[0] for _, vis in out])


def track_method(num_points: int = 400, horizon: int = 16) -> str:
    """AMPLIFY's track folder name, e.g. ``uniform_400_reinit_16``."""
    return f"uniform_{num_points}_reinit_{horizon}"


def write_text(root: str, suite: str, task: Task) -> str:
    """``<root>/<suite>/text/<task>.hdf5``: dataset ``text_emb`` (512,) float32, attr ``instruction``."""
    path = os.path.join(root, suite, "text", f"{task.name}.hdf5")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("text_emb", data=get_text_embedding(task.instruction))
        f.attrs["instruction"] = task.instruction
        f.attrs["task_name"] = task.name
    return path


def _task_job(args: tuple) -> dict:
    root, suite, task_name, n_demos, num_points, horizon, seed, noise, tracks, dart, dart_tracks, starts, shared = args
    from .suites import get_task

    task = get_task(task_name)
    init_states = shared_demo_init_states if shared else demo_init_states
    inits = init_states(task, 4 * n_demos + 10, seed)  # never a benchmark (get_init_states) state
    inits = distractor_starts(task, inits, starts, seed)  # unchanged when starts == 0
    demo_path = os.path.join(root, suite, f"{task.name}_demo.hdf5")
    tdir = os.path.join(root, suite, track_method(num_points, horizon), f"{task.name}_demo")
    os.makedirs(os.path.dirname(demo_path), exist_ok=True)
    if tracks:
        os.makedirs(tdir, exist_ok=True)
    q = uniform_grid(num_points)
    tries = ok = total = 0
    with h5py.File(demo_path, "w") as f:
        data = f.create_group("data")
        while ok < n_demos:
            if tries >= 4 * n_demos + 10:
                raise RuntimeError(f"expert failed too often on {task.name}")
            k = tries
            ep = rollout(task, inits[k], seed=seed * 100003 + tries, noise=noise, dart=dart)
            tries += 1
            if not ep["success"]:
                continue
            T = ep["num_steps"]
            g = data.create_group(f"demo_{ok}")
            g.attrs["num_samples"] = T
            g.attrs["init_state"] = inits[k]
            g.attrs["init_state_index"] = k  # index in the init_state_source stream, not a benchmark index
            g.attrs["init_state_source"] = f"{init_states.__name__}(seed={seed})" + (
                f", distractor_starts({starts}, seed={seed})" if starts else "")
            g.create_dataset("actions", data=ep["actions"])  # the expert's actions (the labels)
            if dart > 0:  # what ran differs from the labels: replay these to reproduce the frames
                g.create_dataset("actions_executed", data=ep["executed"])
            g.create_dataset("states", data=ep["states"])
            quat = np.tile([1.0, 0.0, 0.0, 0.0], (T, 1))  # the effector never rotates
            g.create_dataset("robot_states", data=np.concatenate([ep["gripper_states"], ep["ee_pos"], quat], 1))  # (T, 9)
            dones = np.zeros(T, np.uint8)
            dones[-1] = 1
            g.create_dataset("dones", data=dones)
            g.create_dataset("rewards", data=dones.copy())
            o = g.create_group("obs")
            o.create_dataset("agentview_rgb", data=ep["agentview_rgb"][:, ::-1], chunks=(1, 128, 128, 3), **COMP)
            o.create_dataset("eye_in_hand_rgb", data=ep["eye_in_hand_rgb"][:, ::-1], chunks=(1, 128, 128, 3), **COMP)
            o.create_dataset("joint_states", data=ep["joint_states"])
            o.create_dataset("gripper_states", data=ep["gripper_states"])
            o.create_dataset("ee_pos", data=ep["ee_pos"])
            o.create_dataset("ee_ori", data=np.zeros((T, 3)))
            o.create_dataset("ee_states", data=np.concatenate([ep["ee_pos"], np.zeros((T, 3))], 1))
            if tracks:
                if dart > 0 and dart_tracks == "expert":  # the expert's intended motion from every visited state
                    fut = [expert_future_tracks(task, st, VIEWS, q, horizon) for st in ep["states"]]
                    per_view = {v: (np.stack([f[0][i] for f in fut]), np.stack([f[1][i] for f in fut]))
                                for i, v in enumerate(VIEWS)}
                else:  # the motion that ran
                    per_view = {v: compute_tracks(v, ep[f"{v}_ids"], ep["entities"], ep["ee_pos"], horizon, q)
                                for v in VIEWS}
                with h5py.File(os.path.join(tdir, f"demo_{ok}.hdf5"), "w") as tf:
                    for v in VIEWS:
                        tr, vis = per_view[v]
                        tf.create_dataset(f"root/{v}/tracks", data=tr, chunks=(1, horizon, num_points, 2), **COMP)
                        tf.create_dataset(f"root/{v}/vis", data=vis.astype(np.float32), chunks=(1, horizon, num_points), **COMP)
                    tf["root"].attrs["coords"] = "pixel (col, row) in the upright 128x128 image"
                    tf["root"].attrs["num_points"] = num_points
                    tf["root"].attrs["horizon"] = horizon
            ok += 1
            total += T
        data.attrs["num_demos"] = ok
        data.attrs["total"] = total
        data.attrs["problem_info"] = json.dumps({"problem_name": task.family, "domain_name": "builtin",
                                                 "language_instruction": task.instruction})
        data.attrs["language_instruction"] = task.instruction
        data.attrs["env_args"] = json.dumps({"type": 1, "env_name": "BuiltinEnv", "env_kwargs": {
            "task": task.name, "camera_heights": 128, "camera_widths": 128,
            "camera_names": ["agentview", "robot0_eye_in_hand"]}})
        data.attrs["bddl_file_name"] = f"builtin/{suite}/{task.name}.bddl"
        data.attrs["tag"] = "builtin"
    write_text(root, suite, task)
    return {"task": task.name, "demos": ok, "tries": tries, "steps": total}


def generate(suite: str, out: str, demos_per_task: int = 50, num_points: int = 400, horizon: int = 16,
             seed: int = 0, noise: float = 0.0, tracks: bool = True, workers: int = 1,
             tasks: list[str] | None = None, dart: float = 0.0, dart_tracks: str = "executed",
             distractor_starts: float = 0.0, shared_starts: bool = False) -> dict:
    """Write a suite's demos, tracks and text embeddings under ``out``; returns stats.

    Demonstrations start from ``demo_init_states(task, ., seed)``, never from the 50 benchmark
    init states that evaluation uses; failed expert episodes are skipped. ``dart`` > 0 runs noisy
    actions and stores the expert's as ``actions`` (labels) and what ran as ``actions_executed``;
    its tracks are the motion that ran (``dart_tracks="executed"``) or, like the labels, the expert's
    intended motion from each visited state (``"expert"``: :func:`expert_future_tracks`, a 16-step
    expert rollout per frame). ``distractor_starts``: that fraction of the demonstrations start the
    effector above an object the task does not move (:func:`world.tasks.distractor_starts`). ``shared_starts``:
    tasks of the same scene start their demonstrations from the same layouts
    (:func:`world.tasks.shared_demo_init_states`), so the instruction alone tells them apart."""
    if dart_tracks not in ("executed", "expert"):
        raise ValueError(f"dart_tracks must be 'executed' or 'expert', got {dart_tracks!r}")
    names = tasks or SUITES[suite]
    jobs = [(out, suite, n, demos_per_task, num_points, horizon, seed, noise, tracks, dart, dart_tracks, distractor_starts,
             shared_starts)
            for n in names]
    t0 = time.perf_counter()
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as ex:
            stats = list(ex.map(_task_job, jobs))
    else:
        stats = [_task_job(j) for j in jobs]
    sec = time.perf_counter() - t0
    demos = sum(s["demos"] for s in stats)
    tries = sum(s["tries"] for s in stats)
    return {"suite": suite, "tasks": stats, "demos": demos, "expert_success": demos / max(tries, 1),
            "steps": sum(s["steps"] for s in stats), "seconds": sec}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m world.generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="builtin_all", choices=sorted(SUITES))
    p.add_argument("--out", required=True, help="dataset root")
    p.add_argument("--demos-per-task", type=int, default=50)
    p.add_argument("--num-points", type=int, default=400)
    p.add_argument("--horizon", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", type=float, default=0.0, help="i.i.d. noise on the expert's actions (labels too)")
    p.add_argument("--dart", type=float, default=0.0,
                   help="noise on the executed actions only: demos visit off-path states, labels stay the expert's")
    p.add_argument("--dart-tracks", default="executed", choices=["executed", "expert"],
                   help="with --dart: tracks of the motion that ran, or of the expert's intended motion from "
                        "each visited state (labels like the actions)")
    p.add_argument("--distractor-starts", type=float, default=0.0,
                   help="fraction of demos whose effector starts above an object the task does not move")
    p.add_argument("--shared-starts", action="store_true",
                   help="tasks of the same scene start their demos from the same layouts (only the instruction differs)")
    p.add_argument("--workers", type=int, default=max(1, min(os.cpu_count() or 1, 4)))
    p.add_argument("--tasks", nargs="*", default=None, help="subset of the suite's task names")
    p.add_argument("--no-tracks", action="store_true")
    a = p.parse_args(argv)
    st = generate(a.suite, a.out, a.demos_per_task, a.num_points, a.horizon, a.seed, a.noise,
                  not a.no_tracks, a.workers, a.tasks, a.dart, a.dart_tracks, a.distractor_starts, a.shared_starts)
    for s in st["tasks"]:
        print(f"{s['task']}: {s['demos']} demos ({s['tries']} tries, {s['steps']} steps)")
    print(f"{st['demos']} demos, {st['steps']} steps, expert success {st['expert_success']:.1%}, "
          f"{st['seconds']:.1f} s -> {os.path.join(a.out, a.suite)}")


if __name__ == "__main__":
    main()
