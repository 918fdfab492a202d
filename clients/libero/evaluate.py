"""Evaluate a served AMPLIFY policy on LIBERO tasks (or the built-in world) through ``/act``.

    amplify-libero --server http://127.0.0.1:8000 --suite libero_10 --tasks 0 1 --episodes 5 \\
        --num-envs 2 --output results.json [--video-dir videos/]        # or python -m clients.libero

LIBERO lives in its own venv (numpy 1.26, $AMPLIFY_HOME/venv-libero): run from anywhere else, the
command re-runs itself with that venv's python, creating the venv on first use.

Each step sends both cameras (flipped upright), proprioception (7 joint + 2 gripper positions) and
the task's instruction; the returned chunk is executed by temporal aggregation (default; ACT's
``w_i = exp(-k i)``, oldest weighted most) or by chunked replanning (``--execution chunk
--replan-every N``), through a sticky gripper when the model's ``/metadata`` names ``gripper_hold`` (a
changed gripper command kept that many steps; ``--gripper-hold H`` sets it, 0 turns it off). Episodes
start from the task's fixed initial states (episode i uses state i).
Reports success per task and suite, ``/act`` latency percentiles and the step rate as JSON.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clients.client import AmplifyClient
from clients.protocols import PROTOCOLS, client_class
from clients.errors import AmplifyError, IncompatibleModelError, NotFoundError
from clients.libero.envs import IMAGE_KEYS, TaskInfo, list_tasks, make_env, observe, start_episode
from clients.libero.execution import ChunkedExecutor, GripperLatch, TemporalAggregator

ACTION_DIM = 7   # LIBERO's OSC_POSE controller: 6 end-effector deltas + gripper
PROPRIO_DIM = 9  # 7 joint positions + 2 gripper positions


@dataclass
class EvalConfig:
    """Everything a worker needs (picklable; sent to each environment process)."""

    server: str
    api_key: str | None = None
    env: str = "libero"
    execution: str = "temporal"      # "temporal" | "chunk"
    temporal_k: float = 0.01
    replan_every: int | None = None  # chunk mode; default the model's action horizon
    gripper_hold: int | None = None  # sticky gripper steps; default the model's /metadata gripper_hold, else 0
    max_steps: int | None = None     # default: the suite's / task's limit
    settle_steps: int = 10
    text: str = "server"             # "server": send the instruction; "builtin": the world's embedding
    sampling: str = "argmax"
    seed: int | None = None
    timeout: float = 60.0
    video_dir: str | None = None
    video_tracks: bool = True
    protocol: str = "http"           # "http" | "openpi" | "v2" (clients.protocols)
    export_dir: str | None = None    # v2 against Triton: the export's directory (views, instruction table)
    clip_actions: bool = True


@dataclass
class EpisodeResult:
    task_index: int
    episode: int
    success: bool
    steps: int
    seconds: float
    act_latencies_ms: list[float] = field(default_factory=list)
    env_seconds: float = 0.0
    video: str | None = None


def _executor(cfg: EvalConfig, meta: dict[str, Any]):
    if cfg.execution == "temporal":
        return TemporalAggregator(cfg.temporal_k)
    if cfg.execution == "chunk":
        return ChunkedExecutor(cfg.replan_every or int(meta["action_horizon"]))
    raise ValueError(f"--execution: expected 'temporal' or 'chunk', got {cfg.execution!r}")


def gripper_hold(cfg: EvalConfig, meta: dict[str, Any]) -> int:
    """The sticky gripper's steps: ``cfg.gripper_hold``, else what the model's metadata names, else 0 (off)."""
    return int(cfg.gripper_hold if cfg.gripper_hold is not None else meta.get("gripper_hold") or 0)


def connect(cfg: EvalConfig) -> AmplifyClient:
    """A client of ``cfg.protocol`` checked against what the robot can feed: views it has cameras for,
    7-d actions, 9-d proprio."""
    extra = {"export_dir": cfg.export_dir} if cfg.protocol == "v2" and cfg.export_dir else {}
    client = client_class(cfg.protocol)(cfg.server, api_key=cfg.api_key, timeout=cfg.timeout,
                                        expect_action_dim=ACTION_DIM, expect_proprio_dim=PROPRIO_DIM, **extra)
    views = client.metadata()["views"]
    missing = [v for v in views if v not in IMAGE_KEYS]
    if missing:
        client.close()
        raise IncompatibleModelError(f"the model wants views {views}; the robot has cameras {list(IMAGE_KEYS)}",
                                     code="incompatible_model", field="views")
    return client


def run_episode(client: AmplifyClient, env: Any, init_state: np.ndarray, info: TaskInfo, cfg: EvalConfig,
                episode: int) -> EpisodeResult:
    """One episode from ``init_state``: query ``/act`` as the executor asks, step, stop on success."""
    meta = client.metadata()
    views = list(meta["views"])
    executor = _executor(cfg, meta)
    latch = GripperLatch(gripper_hold(cfg, meta))
    text_kw: dict[str, Any] = {"text": info.instruction}
    if cfg.text == "builtin":
        import world
        text_kw = {"text_emb": world.get_text_embedding(info.instruction)}
    record = cfg.video_dir is not None
    frames: list[np.ndarray] = []
    tracks = None
    if record:
        from clients.libero.video import frame, query_grid
        grid = np.broadcast_to(query_grid(int(meta["num_tracks"])), (len(views), int(meta["num_tracks"]), 2))
    max_steps = cfg.max_steps or info.max_steps
    t_start = time.perf_counter()
    obs = start_episode(env, init_state, cfg.settle_steps if info.env == "libero" else 0)
    latencies, env_seconds, success, step = [], 0.0, False, 0
    for step in range(max_steps):
        images, proprio = observe(obs, views)
        if executor.needs_query(step):
            t0 = time.perf_counter()
            chunk = client.act(images, proprio, sampling=cfg.sampling, seed=cfg.seed, **text_kw)  # (A, 7)
            latencies.append(1000 * (time.perf_counter() - t0))
            executor.add(step, chunk)
            if record and cfg.video_tracks and cfg.protocol != "openpi":  # openpi's protocol carries act only
                tracks = client.predict_traj(images, grid, sampling=cfg.sampling, seed=cfg.seed, **text_kw)
        if record:
            frames.append(frame(images, tracks, views))
        action = latch(executor.action(step))
        if cfg.clip_actions:
            action = np.clip(action, -1.0, 1.0)
        t0 = time.perf_counter()
        obs, _, done, _ = env.step(action)
        env_seconds += time.perf_counter() - t0
        if done or env.check_success():
            success = True
            break
    result = EpisodeResult(info.index, episode, success, step + 1, time.perf_counter() - t_start, latencies, env_seconds)
    if record and frames:
        from clients.libero.video import write_mp4
        name = f"{info.suite}_task{info.index:02d}_ep{episode:03d}_{'success' if success else 'fail'}.mp4"
        result.video = str(write_mp4(Path(cfg.video_dir) / name, frames))
    return result


def _worker(job: tuple[EvalConfig, TaskInfo, list[int], tuple[int, int]]) -> list[EpisodeResult]:
    """One environment process: build the task's env once, run its episodes."""
    cfg, info, episodes, camera = job
    os.environ.setdefault("MUJOCO_GL", "egl")
    client = connect(cfg)
    env, init_states = make_env(info, camera)
    try:
        return [run_episode(client, env, init_states[e % len(init_states)], info, cfg, e) for e in episodes]
    finally:
        env.close()
        client.close()


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    a = np.asarray(values)
    return {"count": int(a.size), "mean": round(float(a.mean()), 2), "p50": round(float(np.percentile(a, 50)), 2),
            "p95": round(float(np.percentile(a, 95)), 2), "p99": round(float(np.percentile(a, 99)), 2),
            "max": round(float(a.max()), 2)}


def evaluate(cfg: EvalConfig, suite: str, tasks: list[str] | None = None, episodes: int = 1,
             num_envs: int = 1) -> dict[str, Any]:
    """Run ``episodes`` per chosen task of ``suite`` on ``num_envs`` processes; returns the report."""
    with connect(cfg) as client:
        meta = client.metadata()
    all_tasks = list_tasks(cfg.env, suite)
    chosen = _choose(all_tasks, tasks)
    camera = tuple(int(s) for s in meta["image_size"]) if cfg.env == "libero" else (128, 128)
    if cfg.text == "server":
        _check_instructions(cfg, meta, chosen)
    # Split each task's episodes over the processes so that every env process stays busy.
    per_task = max(1, num_envs // max(len(chosen), 1))
    jobs = []
    for info in chosen:
        eps = list(range(episodes))  # episode e starts from init state e (mod the number of states)
        for part in np.array_split(np.asarray(eps), min(per_task, len(eps))):
            jobs.append((cfg, info, [int(e) for e in part], camera))
    t0 = time.perf_counter()
    if num_envs <= 1:
        results = [r for job in jobs for r in _worker(job)]
    else:
        results = []
        with ProcessPoolExecutor(min(num_envs, len(jobs)), mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_worker, job) for job in jobs]
            try:
                for fut in as_completed(futures):
                    results += fut.result()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    wall = time.perf_counter() - t0
    return report(cfg, suite, chosen, results, wall, meta, num_envs)


def _check_instructions(cfg: EvalConfig, meta: dict[str, Any], tasks: list[TaskInfo]) -> None:
    """Before building any environment: one ``/act`` on a blank observation for each instruction the
    model's table does not list, so an instruction the server cannot embed fails now (404), not later."""
    unknown = sorted({t.instruction for t in tasks} - set(meta.get("instructions") or []))
    if not unknown:
        return
    h, w = meta["image_size"]
    blank = np.zeros((len(meta["views"]), h, w, 3), np.uint8)
    with connect(cfg) as client:
        for text in unknown:
            client.act(blank, np.zeros(PROPRIO_DIM, np.float32), text=text, sampling=cfg.sampling, seed=cfg.seed)


def _choose(all_tasks: list[TaskInfo], wanted: list[str] | None) -> list[TaskInfo]:
    if not wanted:
        return all_tasks
    out = []
    for w in wanted:
        hit = [t for t in all_tasks if (w.isdigit() and t.index == int(w)) or w in (t.name, t.instruction)]
        if not hit:
            raise ValueError(f"--tasks: {w!r} is neither an index (0-{len(all_tasks) - 1}) nor a task name of the suite")
        out += [h for h in hit if h not in out]
    return out


def report(cfg: EvalConfig, suite: str, tasks: list[TaskInfo], results: list[EpisodeResult], wall: float,
           meta: dict[str, Any], num_envs: int) -> dict[str, Any]:
    """Success per task and suite, /act latency percentiles, step rates."""
    by_task = []
    for info in tasks:
        rs = sorted((r for r in results if r.task_index == info.index), key=lambda r: r.episode)
        n_ok = sum(r.success for r in rs)
        by_task.append({"task_index": info.index, "task": info.name, "instruction": info.instruction,
                        "episodes": len(rs), "successes": n_ok, "success_rate": n_ok / len(rs) if rs else None,
                        "mean_steps": float(np.mean([r.steps for r in rs])) if rs else None,
                        "videos": [r.video for r in rs if r.video]})
    n_eps = len(results)
    n_ok = sum(r.success for r in results)
    steps = sum(r.steps for r in results)
    latencies = [x for r in results for x in r.act_latencies_ms]
    episode_s = sum(r.seconds for r in results)
    env_s = sum(r.env_seconds for r in results)
    return {
        "server": cfg.server, "model": meta.get("model"), "env": cfg.env,
        "execution": {"mode": cfg.execution, "temporal_k": cfg.temporal_k if cfg.execution == "temporal" else None,
                      "replan_every": (cfg.replan_every or meta.get("action_horizon")) if cfg.execution == "chunk" else None,
                      "gripper_hold": gripper_hold(cfg, meta),
                      "max_steps": cfg.max_steps, "settle_steps": cfg.settle_steps if cfg.env == "libero" else 0,
                      "sampling": cfg.sampling, "num_envs": num_envs},
        "suites": {suite: {"episodes": n_eps, "successes": n_ok, "success_rate": n_ok / n_eps if n_eps else None}},
        "tasks": by_task,
        "act_latency_ms": _percentiles(latencies),
        "steps": steps,
        "wall_seconds": round(wall, 2),
        "steps_per_second": round(steps / wall, 3) if wall else None,            # all envs together
        "steps_per_second_per_env": round(steps / episode_s, 3) if episode_s else None,
        "env_step_ms": round(1000 * env_s / steps, 2) if steps else None,          # simulation + rendering only
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="amplify-libero", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--server", default="http://127.0.0.1:8000", help="the service's base URL")
    p.add_argument("--protocol", choices=list(PROTOCOLS), default="http",
                   help="http (this project's /act), openpi (openpi's WebSocket policy protocol) or v2 (KServe v2: "
                        "amplify serve's /v2, or Triton serving `amplify export --format triton`)")
    p.add_argument("--export-dir", default=None, help="--protocol v2 against Triton: the export's directory "
                   "(its manifest names the views; its instruction table embeds the task instructions)")
    p.add_argument("--api-key", default=os.environ.get("AMPLIFY_API_KEY"), help="Bearer key (or $AMPLIFY_API_KEY)")
    p.add_argument("--env", choices=["libero", "builtin"], default="libero",
                   help="real LIBERO (its own venv) or the built-in numpy world")
    p.add_argument("--suite", default="libero_10",
                   help="libero_10, libero_90, libero_spatial, libero_object, libero_goal; builtin_* with --env builtin")
    p.add_argument("--tasks", nargs="*", default=None, help="task indices or names (default: every task of the suite)")
    p.add_argument("--episodes", type=int, default=1, help="episodes per task, from its fixed initial states 0..N-1")
    p.add_argument("--max-steps", type=int, default=None, help="step limit per episode (default: the suite's)")
    p.add_argument("--settle-steps", type=int, default=10, help="LIBERO: still steps after reset before acting")
    p.add_argument("--num-envs", type=int, default=1, help="environments in parallel processes")
    p.add_argument("--execution", choices=["temporal", "chunk"], default="temporal",
                   help="temporal aggregation of overlapping chunks (query every step) or chunked replanning")
    p.add_argument("--temporal-k", type=float, default=0.01, help="temporal aggregation: w_i = exp(-k i)")
    p.add_argument("--replan-every", type=int, default=None, help="chunk mode: steps per query (default: the action horizon)")
    p.add_argument("--gripper-hold", type=int, default=None, metavar="H",
                   help="keep a changed gripper command H steps (a sticky gripper; default: the model's /metadata "
                        "gripper_hold, else 0: off)")
    p.add_argument("--text", choices=["server", "builtin"], default="server",
                   help="'server': send the instruction text (the model or server must know it); "
                        "'builtin': send the built-in world's deterministic embedding of it")
    p.add_argument("--sampling", choices=["argmax", "topk"], default="argmax")
    p.add_argument("--seed", type=int, default=None, help="topk sampling seed")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    p.add_argument("--video-dir", default=None, help="write an MP4 per episode here (with predicted tracks)")
    p.add_argument("--no-video-tracks", action="store_true", help="videos without /predict_traj overlays")
    p.add_argument("--no-clip", action="store_true", help="do not clip actions to [-1, 1]")
    p.add_argument("--output", default=None, help="write the JSON report here (it is printed too)")
    return p


def _run_in_libero_venv(argv: list[str]) -> int:
    """LIBERO is not importable here (it lives in its own venv, numpy 1.26): run this same command with
    that venv's python, creating the venv first if needed (python -m clients.libero.setup_env)."""
    from clients.libero.setup_env import REPO, default_venv, ensure, is_ready

    venv = Path(os.environ.get("AMPLIFY_LIBERO_VENV", default_venv()))
    if not is_ready(venv):
        print(f"amplify-libero: creating LIBERO's environment in {venv} (once; see docs/clients.md)", file=sys.stderr)
    python = ensure(venv)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([str(python), "-m", "clients.libero", *argv], env=env).returncode


def main(argv: list[str] | None = None) -> int:
    """``amplify-libero`` / ``python -m clients.libero``."""
    a = build_parser().parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    if a.gripper_hold is not None and a.gripper_hold < 0:
        print(f"amplify-libero: --gripper-hold: expected a number of steps >= 0, got {a.gripper_hold}", file=sys.stderr)
        return 2
    if a.env == "libero" and importlib.util.find_spec("libero") is None:
        return _run_in_libero_venv(sys.argv[1:] if argv is None else argv)
    cfg = EvalConfig(server=a.server, api_key=a.api_key, env=a.env, execution=a.execution, temporal_k=a.temporal_k,
                     replan_every=a.replan_every, gripper_hold=a.gripper_hold,
                     max_steps=a.max_steps, settle_steps=a.settle_steps, text=a.text,
                     sampling=a.sampling, seed=a.seed, timeout=a.timeout, video_dir=a.video_dir,
                     video_tracks=not a.no_video_tracks, clip_actions=not a.no_clip, protocol=a.protocol,
                     export_dir=a.export_dir)
    try:
        result = evaluate(cfg, a.suite, a.tasks, a.episodes, a.num_envs)
    except NotFoundError as e:
        print(f"amplify-libero: {e}\nThe server cannot embed this instruction; --text builtin sends an embedding "
              "instead (or serve a model that knows the suite's instructions, or configure a text encoder).",
              file=sys.stderr)
        return 1
    except (AmplifyError, ValueError) as e:
        print(f"amplify-libero: {e}", file=sys.stderr)
        return 1
    except ImportError as e:
        hint = "" if a.env == "builtin" else ("\nLIBERO lives in its own environment: python -m clients.libero.setup_env "
                                              "(see docs/clients.md)")
        print(f"amplify-libero: {e}{hint}", file=sys.stderr)
        return 1
    text = json.dumps(result, indent=2)
    print(text)
    if a.output:
        Path(a.output).parent.mkdir(parents=True, exist_ok=True)
        Path(a.output).write_text(text + "\n")
    return 0
