"""``amplify eval-world``: closed-loop success in the built-in world, on the benchmark's initial states.

    amplify eval-world [--model DIR] [--suite builtin_all] [--per-task 10] [--execute 8]
                       [--baselines expert,random] [--videos DIR] [--json FILE] [--no-model]
                       [--temporal-agg M] [--gripper-hold H] [--precision fp32|bf16|bf16-all] [--id-codes fd|oracle|zero]
                       [--oracle-tokens K] [--id-no-images]

The benchmark is each task's 50 fixed initial states (``world.get_init_states``, like LIBERO's).
Demonstrations are drawn from a separate stream (``world.tasks.demo_init_states``) that never returns
a benchmark state, so these episodes start from states no demonstration used. Every task of the
suite runs from its benchmark states ``first-init .. first-init + per-task - 1``; the model, the
scripted expert and a uniform random policy run on the same episodes, and success is reported per
task, per family and overall.

The model gets, every ``execute`` steps, the upright images of its views, the proprioception
(7 joints + 2 gripper) and the task's instruction as text, and returns an action chunk of which the
first ``execute`` actions run (action chunking), or, with ``--temporal-agg M``, queries it every step
and runs the exp(-M i)-weighted mean of the chunks that cover the step (ACT's temporal ensembling, as the
LIBERO robot client does). ``--gripper-hold H`` keeps a changed gripper command H steps whatever the model
predicts (a sticky gripper; the default bundle records H = 4 in its metadata, which is the default here).
All unfinished episodes query the model as one batch.
``--videos DIR`` replays one success and one failure per task and policy (when there is one) into
GIFs: agentview | eye_in_hand, upright.

Diagnostics of the bundle's parts (the ``model`` column is then NOT the bundle as served):
``--id-codes oracle`` gives the inverse dynamics the tokenized exact future tracks of the scripted
expert from the simulator's state (PRIVILEGED: perfect forward dynamics), ``--id-codes zero`` all-zero
codes, ``--id-no-images`` all-zero image tokens (training/oracle_motion.py). ``--oracle-tokens K`` with
``oracle`` gives only the expert's first K tokens and lets the forward dynamics predict the rest given
them. With ``oracle``, the JSON's ``diagnostic.fd_agreement`` says how often the forward dynamics' own
tokens equal the expert's at the states the episodes visited (per position, and the first k all equal).

``--precision`` runs the model prepared for inference as the torch back end serves it
(``AMPLIFY.prepare_for_inference``): ``fp32`` (same numbers up to rounding) or the opt-in ``bf16``.
Without it the model runs as loaded (float32, unprepared).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

VIEW_KEYS = {"agentview": "agentview_image", "eye_in_hand": "robot0_eye_in_hand_image"}
DEFAULT_PER_TASK = 10
DEFAULT_EXECUTE = 8  # actions run per predicted chunk, for a model whose bundle does not say (the baselines too)
MOVED = 0.01  # table units: an object has moved once its position changed by more than this (1 cm)


def proprioception(obs: dict) -> np.ndarray:
    """Env observation -> proprio (9,) float32: 7 joints + 2 gripper."""
    return np.concatenate([obs["robot0_joint_pos"], obs["robot0_gripper_qpos"]]).astype(np.float32)


def observation(obs: dict, views: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Env observation -> (upright images (v, 128, 128, 3) uint8, proprio (9,) float32)."""
    images = np.stack([obs[VIEW_KEYS[v]][::-1] for v in views])  # the env's images are upside down
    return images, proprioception(obs)


def moved_objects(initial_state: np.ndarray, state: np.ndarray, tol: float = MOVED) -> list[int]:
    """Indices of the scene's objects whose position (x, y, z) differs from ``initial_state``'s by more than ``tol``."""
    from world.scene import N_EE

    start, now = initial_state[N_EE:].reshape(-1, 3), state[N_EE:].reshape(-1, 3)
    return [int(i) for i in np.flatnonzero(np.abs(now - start).max(axis=1) > tol)]


def benchmark_episodes(suite: str = "builtin_all", per_task: int | None = None, episodes: int | None = None,
                       first_init: int = 0) -> list[tuple[str, int]]:
    """(task name, benchmark init index) of each episode.

    ``per_task``: every task from init states first_init .. first_init + per_task - 1 (task-major order).
    ``episodes`` (when per_task is None): episode e runs task e % num_tasks from init e // num_tasks."""
    from world import get_suite

    names = [t.name for t in get_suite(suite)]
    if per_task is None and episodes is None:
        per_task = DEFAULT_PER_TASK
    if per_task is not None:
        if not 1 <= first_init + per_task <= 50 or first_init < 0:
            raise ValueError(f"per_task + first_init must be in 1..50 (the benchmark's states), got {per_task} + {first_init}")
        return [(n, first_init + k) for n in names for k in range(per_task)]
    return [(names[e % len(names)], first_init + (e // len(names)) % 50) for e in range(int(episodes))]


class ExpertPolicy:
    """The scripted expert on the same episodes (it reads the scene, not the images)."""

    needs_images = False
    uses_scene = True

    def __init__(self, noise: float = 0.0):
        self.noise = noise
        self._experts: dict[int, object] = {}

    def act_envs(self, envs: list, ids: list[int]) -> np.ndarray:
        """One action per active env: (b, 1, 7)."""
        from world import ScriptedExpert

        out = []
        for env, i in zip(envs, ids):
            if i not in self._experts:
                self._experts[i] = ScriptedExpert(env.task, noise=self.noise, seed=i)
            out.append(self._experts[i].act(env.scene))
        return np.asarray(out, np.float32)[:, None]


def evaluate(policy, suite: str = "builtin_all", episodes: int | None = None, execute: int = 8,
             views: tuple[str, ...] = ("agentview", "eye_in_hand"), max_steps: int | None = None,
             progress: bool = True, per_task: int | None = None, first_init: int = 0, name: str = "policy",
             temporal_agg: float | None = None, gripper_hold: int = 0) -> dict:
    """Closed-loop episodes on benchmark init states (see :func:`benchmark_episodes`).

    ``policy(images (b, v, H, W, 3) uint8 upright, proprio (b, 9), instructions list[str]) -> actions (b, A, 7)``;
    a policy with ``needs_images = False`` gets no rendering; one with ``uses_scene`` is called as
    ``policy.act_envs(envs, ids)``. Each chunk's first ``execute`` actions run (chunking); with
    ``temporal_agg`` = m the policy is queried every step instead and the action run is the
    ``exp(-m i)``-weighted mean of every chunk covering that step, i = 0 the oldest (ACT's temporal
    ensembling, ``clients.libero.execution.TemporalAggregator``, as the LIBERO robot client runs).
    ``gripper_hold`` = h > 0: a sticky gripper (``clients.libero.execution.GripperLatch``): a changed gripper
    command is kept h steps whatever the policy predicts.
    Returns success overall, per task and per family, and per episode (task, init, success, steps, the
    actions run, so that episodes can be replayed; ``first_moved``: the index of the first object the policy
    moved, None if it moved none, and whether that was the one the instruction names); ``target_first`` per
    family: the fraction of episodes whose first moved object is the named one (a wrong-object diagnostic)."""
    from clients.libero.execution import GripperLatch, TemporalAggregator
    from world import BuiltinEnv

    plan = benchmark_episodes(suite, per_task, episodes, first_init)
    n = len(plan)
    envs, obs = [], []
    need_images = getattr(policy, "needs_images", True)
    starts = []
    for task_name, k in plan:
        env = BuiltinEnv(task_name, render=False)
        env.set_init_state(env.get_init_states()[k])
        envs.append(env)
        starts.append(env.get_sim_state())
        obs.append(None)
    first_moved: list[int | None] = [None] * n
    limit = [max_steps or env.task.max_steps for env in envs]
    done, success, steps = [False] * n, [False] * n, [0] * n
    actions: list[list[np.ndarray]] = [[] for _ in range(n)]
    aggregators = None if temporal_agg is None else [TemporalAggregator(temporal_agg) for _ in range(n)]
    latches = [GripperLatch(gripper_hold) for _ in range(n)]
    t0 = last = time.perf_counter()
    calls = 0
    while not all(done):
        active = [i for i in range(n) if not done[i]]
        if getattr(policy, "uses_scene", False):
            chunk = policy.act_envs([envs[i] for i in active], active)
        else:
            if need_images:
                batch = [observation(envs[i].get_obs(images=True), list(views)) for i in active]
                images, proprio = np.stack([b[0] for b in batch]), np.stack([b[1] for b in batch])
            else:
                images, proprio = None, np.stack([proprioception(envs[i].get_obs(images=False)) for i in active])
            chunk = policy(images, proprio, [envs[i].language_instruction for i in active])
        chunk = np.asarray(chunk)  # (b, A, 7)
        calls += 1
        for j, i in enumerate(active):
            if aggregators is None:
                run = chunk[j, :execute]
            else:  # one step, from every chunk that covers it
                aggregators[i].add(steps[i], chunk[j])
                run = [aggregators[i].action(steps[i])]
            for a in run:
                a = latches[i](a)
                envs[i].scene.step(a)
                actions[i].append(a)
                steps[i] += 1
                if first_moved[i] is None:
                    moved = moved_objects(starts[i], envs[i].get_sim_state())
                    first_moved[i] = moved[0] if moved else None
                ok = envs[i].check_success()
                if ok or steps[i] >= limit[i]:
                    done[i], success[i] = True, bool(ok)
                    break
        if progress and (all(done) or time.perf_counter() - last > 1.0):
            last = time.perf_counter()
            print(f"\r  {name}: {sum(done)}/{n} episodes done, {sum(success)} successes, "
                  f"{time.perf_counter() - t0:.0f} s", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    per_task_ok: dict[str, list[bool]] = defaultdict(list)
    per_family: dict[str, list[bool]] = defaultdict(list)
    target_first: dict[str, list[bool]] = defaultdict(list)
    for env, s, m in zip(envs, success, first_moved):
        per_task_ok[env.task.name].append(s)
        per_family[env.task.family].append(s)
        target_first[env.task.family].append(m == env.task.target)
    return {"episodes": n, "success_rate": float(np.mean(success)), "successes": int(sum(success)),
            "per_task": {t: float(np.mean(v)) for t, v in per_task_ok.items()},
            "per_family": {f: float(np.mean(v)) for f, v in per_family.items()},
            "target_first": {f: float(np.mean(v)) for f, v in target_first.items()},
            "execute": 1 if aggregators is not None else execute, "temporal_agg": temporal_agg,
            "gripper_hold": gripper_hold,
            "policy_calls": calls, "mean_steps": float(np.mean(steps)),
            "seconds": time.perf_counter() - t0,
            "results": [{"task": t, "init": k, "success": s, "steps": st, "actions": np.asarray(a).tolist(),
                         "first_moved": m, "target_first": m == env.task.target}
                        for (t, k), s, st, a, m, env in zip(plan, success, steps, actions, first_moved, envs)]}


def recorded_setting(metadata: dict, key: str, default: int) -> int:
    """An execution setting a bundle records: what it was evaluated with (``evaluation.<key>``), else what
    its recipe runs (``<key>``), else ``default``."""
    return int(metadata.get("evaluation", {}).get(key, metadata.get(key, default)))


def bundle_policy(model):
    """A policy function over an AMPLIFY bundle (argmax FD decoding, instructions as text)."""
    import torch

    def policy(images: np.ndarray, proprio: np.ndarray, instructions: list[str]) -> np.ndarray:
        with torch.no_grad():
            return model.act(images, proprio, text=instructions).cpu().numpy()
    return policy


def random_policy(seed: int = 0, horizon: int = 16):
    """Uniform random actions in [-1, 1]^7 (seeded); needs no images."""
    rng = np.random.default_rng(seed)

    def policy(images, proprio: np.ndarray, instructions: list[str]) -> np.ndarray:
        return rng.uniform(-1, 1, size=(len(proprio), horizon, 7)).astype(np.float32)
    policy.needs_images = False
    return policy


def save_videos(result: dict, out: str | Path, label: str, per_outcome: int = 1, fps: int = 10) -> list[str]:
    """Replay up to ``per_outcome`` successes and failures per task of one evaluation into GIFs."""
    from world import get_init_states
    from world.visualize import replay_frames, save_frames

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written, count = [], defaultdict(int)
    for ep in result["results"]:
        outcome = "success" if ep["success"] else "failure"
        key = (ep["task"], outcome)
        if count[key] >= per_outcome:
            continue
        count[key] += 1
        frames = replay_frames(ep["task"], get_init_states(ep["task"])[ep["init"]], np.asarray(ep["actions"]).reshape(-1, 7))
        written.append(save_frames(frames, str(out / f"{label}_{ep['task']}_init{ep['init']}_{outcome}.gif"), fps))
    return written


def format_report(results: dict[str, dict]) -> str:
    """A table: per task and per family, one column per evaluated policy."""
    labels = list(results)
    first = results[labels[0]]
    lines = ["  ".join(f"{lab:>8}" for lab in labels) + "  task (benchmark init states never used by demonstrations)"]
    for t in first["per_task"]:
        k = sum(1 for ep in first["results"] if ep["task"] == t)
        lines.append("  ".join(f"{results[lab]['per_task'][t]:8.0%}" for lab in labels) + f"  {t} ({k})")
    for f in first["per_family"]:
        lines.append("  ".join(f"{results[lab]['per_family'][f]:8.0%}" for lab in labels) + f"  family {f}")
    lines.append("  ".join(f"{results[lab]['success_rate']:8.1%}" for lab in labels)
                 + f"  all ({first['episodes']} episodes)")
    if all("target_first" in results[lab] for lab in labels):
        for f in first["target_first"]:
            lines.append("  ".join(f"{results[lab]['target_first'][f]:8.0%}" for lab in labels)
                         + f"  family {f}: the first object moved is the one the instruction names")
    if "model" in results and "expert" in results and results["expert"]["success_rate"] > 0:
        lines.append(f"model / expert = {results['model']['success_rate'] / results['expert']['success_rate']:.2f}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--model", default=None, help="bundle directory (default: your build at $AMPLIFY_HOME/default, "
                        "else the shipped amplify/default_model)")
    parser.add_argument("--no-model", action="store_true", help="evaluate only the baselines")
    parser.add_argument("--suite", default="builtin_all")
    parser.add_argument("--per-task", type=int, default=None,
                        help=f"episodes per task (benchmark init states; default {DEFAULT_PER_TASK})")
    parser.add_argument("--episodes", type=int, default=None,
                        help="instead of --per-task: episode e runs task e %% num_tasks from init e // num_tasks")
    parser.add_argument("--first-init", type=int, default=0, help="first benchmark init state index")
    parser.add_argument("--execute", type=int, default=None,
                        help="actions run from each predicted chunk (default: the bundle's metadata, what it was evaluated "
                             "with (evaluation.execute) or what its recipe runs (execute), else 8)")
    parser.add_argument("--temporal-agg", type=float, default=None, metavar="M",
                        help="query the model every step and run the exp(-M i)-weighted mean of the overlapping "
                             "chunks' actions (ACT's temporal ensembling; i = 0 the oldest) instead of chunking")
    parser.add_argument("--gripper-hold", type=int, default=None, metavar="H",
                        help="keep a changed gripper command H steps whatever the model predicts (a sticky gripper; "
                             "default: the bundle's metadata, what it was evaluated with (evaluation.gripper_hold) or "
                             "what its recipe runs (gripper_hold), else 0: off); not applied to the baselines")
    parser.add_argument("--id-codes", choices=("fd", "oracle", "zero"), default="fd",
                        help="diagnostic: the codes the model's inverse dynamics gets: its forward dynamics' (the "
                             "bundle as served), 'oracle' (PRIVILEGED: the tokenized exact tracks of the scripted "
                             "expert's next steps from the simulator's state, i.e. perfect forward dynamics) or "
                             "'zero' (all-zero codes); see training/oracle_motion.py")
    parser.add_argument("--oracle-tokens", type=int, default=None, metavar="K",
                        help="diagnostic, with --id-codes oracle: only the expert's first K tokens; the forward "
                             "dynamics predicts the rest given them (what getting the first tokens right is worth)")
    parser.add_argument("--id-no-images", action="store_true",
                        help="diagnostic: all-zero image tokens for the inverse dynamics (does it use the images)")
    parser.add_argument("--baselines", default="expert,random",
                        help="comma-separated baselines on the same episodes: expert, random (or 'none')")
    parser.add_argument("--random", action="store_true", help="(kept for compatibility; random is a default baseline)")
    parser.add_argument("--videos", default=None, help="write GIFs of a success and a failure per task and policy here")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default=None, choices=["fp32", "bf16", "bf16-all", "float32", "bfloat16"],
                        help="run the model prepared for inference in this precision, as `amplify serve "
                             "--precision` does (default: as loaded, float32 unprepared)")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    baselines = [b for b in args.baselines.split(",") if b and b != "none"]
    for b in baselines:
        if b not in ("expert", "random"):
            print(f"--baselines: expected expert and/or random, got {b!r}", file=sys.stderr)
            return 2
    if args.random and "random" not in baselines:
        baselines.append("random")
    execute = DEFAULT_EXECUTE if args.execute is None else args.execute  # a bundle's own setting replaces the default
    kw = dict(suite=args.suite, episodes=args.episodes, execute=execute, per_task=args.per_task,
              first_init=args.first_init, progress=not args.no_progress)
    results: dict[str, dict] = {}
    meta: dict = {}
    if not args.no_model:
        import torch

        from amplify.defaults import default_model_dir
        from amplify.policy import AMPLIFY

        torch.manual_seed(args.seed)
        path = Path(args.model) if args.model else default_model_dir()
        if path is None:
            print("no model: name one with --model (no build at $AMPLIFY_HOME/default and none shipped)", file=sys.stderr)
            return 2
        model = AMPLIFY.load(path)
        meta["model"] = str(path)
        if args.execute is None:
            kw["execute"] = recorded_setting(model.metadata, "execute", DEFAULT_EXECUTE)
        hold = recorded_setting(model.metadata, "gripper_hold", 0) if args.gripper_hold is None else args.gripper_hold
        if hold < 0:
            print(f"--gripper-hold: expected a number of steps >= 0, got {hold}", file=sys.stderr)
            return 2
        if args.precision is not None:
            from amplify.inference import precision_name

            meta["precision"] = precision_name(args.precision)
            model.prepare_for_inference(meta["precision"])
        if args.oracle_tokens is not None and args.id_codes != "oracle":
            print("--oracle-tokens goes with --id-codes oracle", file=sys.stderr)
            return 2
        if args.id_codes != "fd" or args.id_no_images:  # a diagnostic variant of the bundle's ID
            from training.oracle_motion import OracleMotionPolicy
            meta["diagnostic"] = {"id_codes": args.id_codes, "id_images": not args.id_no_images,
                                  "privileged": args.id_codes == "oracle"}
            if args.id_codes == "oracle":
                print("model: PRIVILEGED diagnostic, the ID gets the expert's true future motion", file=sys.stderr)
            if args.oracle_tokens is not None:
                meta["diagnostic"]["oracle_tokens"] = args.oracle_tokens
            try:
                policy = OracleMotionPolicy(model, observation, codes=args.id_codes, images=not args.id_no_images,
                                            oracle_tokens=args.oracle_tokens)
            except ValueError as e:
                print(f"--oracle-tokens: {e}", file=sys.stderr)
                return 2
            results["model"] = evaluate(policy, name="model", temporal_agg=args.temporal_agg, gripper_hold=hold, **kw)
            if args.id_codes == "oracle":
                meta["diagnostic"]["fd_agreement"] = policy.agreement()
                agree = meta["diagnostic"]["fd_agreement"]["first_k_all_equal"]
                print(f"FD's own tokens equal the expert's at the visited states: first {agree[1]:.1%}, "
                      f"first two {agree[2]:.1%}, all {agree[-1]:.1%} of {policy.calls} calls", file=sys.stderr)
        else:
            results["model"] = evaluate(bundle_policy(model), views=tuple(model.views), name="model",
                                        temporal_agg=args.temporal_agg, gripper_hold=hold, **kw)
    if "expert" in baselines:
        results["expert"] = evaluate(ExpertPolicy(), name="expert", **kw)
    if "random" in baselines:
        results["random"] = evaluate(random_policy(args.seed), name="random", **kw)
    if not results:
        print("nothing to evaluate (--no-model and --baselines none)", file=sys.stderr)
        return 2
    print(format_report(results))
    if args.videos:
        for label, res in results.items():
            written = save_videos(res, args.videos, label)
            print(f"{label}: {len(written)} videos -> {args.videos}")
    if "diagnostic" in meta:
        print(f"model column: diagnostic {meta['diagnostic']}")
    if args.json:
        Path(args.json).write_text(json.dumps({**meta, **results}, indent=1))
    return 0
