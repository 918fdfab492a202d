"""``amplify eval-world``: closed-loop success rate of a bundle in the built-in world.

    amplify eval-world --model DIR --episodes 50 [--suite builtin_all] [--execute 8] [--random]

Episode e runs task ``e % num_tasks`` from that task's init state ``e // num_tasks`` (the same
episodes for every policy). Every ``execute`` steps the policy gets the upright images of both views,
the proprioception (7 joints + 2 gripper) and the task's instruction as text, and returns an action
chunk of which the first ``execute`` actions run (action chunking). Episodes of one replanning step
run as one batch. ``--random`` evaluates a uniform random policy over the same episodes.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

VIEW_KEYS = {"agentview": "agentview_image", "eye_in_hand": "robot0_eye_in_hand_image"}


def observation(obs: dict, views: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Env observation -> (upright images (v, 128, 128, 3) uint8, proprio (9,) float32)."""
    images = np.stack([obs[VIEW_KEYS[v]][::-1] for v in views])  # the env's images are upside down
    proprio = np.concatenate([obs["robot0_joint_pos"], obs["robot0_gripper_qpos"]]).astype(np.float32)
    return images, proprio


def evaluate(policy, suite: str = "builtin_all", episodes: int = 50, execute: int = 8,
             views: tuple[str, ...] = ("agentview", "eye_in_hand"), max_steps: int | None = None,
             progress: bool = True) -> dict:
    """Run ``episodes`` closed-loop episodes; ``policy(images (b, v, H, W, 3) uint8, proprio (b, 9),
    instructions list[str]) -> actions (b, A, 7)``. Returns success rates overall and per task."""
    from world import BuiltinEnv, get_suite

    tasks = get_suite(suite)
    envs, obs, names = [], [], []
    for e in range(episodes):
        task = tasks[e % len(tasks)]
        env = BuiltinEnv(task)
        init = env.get_init_states()[(e // len(tasks)) % len(env.get_init_states())]
        obs.append(env.set_init_state(init))
        envs.append(env)
        names.append(task.name)
    limit = [max_steps or env.task.max_steps for env in envs]
    done = [False] * episodes
    success = [False] * episodes
    steps = [0] * episodes
    t0 = time.perf_counter()
    calls = 0
    while not all(done):
        active = [i for i in range(episodes) if not done[i]]
        batch = [observation(obs[i], list(views)) for i in active]
        images = np.stack([b[0] for b in batch])
        proprio = np.stack([b[1] for b in batch])
        chunk = np.asarray(policy(images, proprio, [envs[i].language_instruction for i in active]))  # (b, A, 7)
        calls += 1
        for j, i in enumerate(active):
            for a in chunk[j, :execute]:
                obs[i], _, ok, _ = envs[i].step(a)
                steps[i] += 1
                if ok or steps[i] >= limit[i]:
                    done[i], success[i] = True, bool(ok)
                    break
        if progress:
            print(f"\r{sum(done)}/{episodes} episodes done, {sum(success)} successes", end="", flush=True)
    if progress:
        print()
    per_task: dict[str, list[bool]] = defaultdict(list)
    for n, s in zip(names, success):
        per_task[n].append(s)
    return {"episodes": episodes, "success_rate": float(np.mean(success)), "successes": int(sum(success)),
            "per_task": {n: float(np.mean(v)) for n, v in per_task.items()}, "execute": execute,
            "policy_calls": calls, "mean_steps": float(np.mean(steps)), "seconds": time.perf_counter() - t0}


def bundle_policy(model):
    """A policy function over an AMPLIFY bundle (argmax FD decoding, instructions as text)."""
    def policy(images: np.ndarray, proprio: np.ndarray, instructions: list[str]) -> np.ndarray:
        with torch.no_grad():
            return model.act(images, proprio, text=instructions).cpu().numpy()
    return policy


def random_policy(seed: int = 0, horizon: int = 16):
    """Uniform random actions in [-1, 1]^7 (seeded)."""
    rng = np.random.default_rng(seed)

    def policy(images: np.ndarray, proprio: np.ndarray, instructions: list[str]) -> np.ndarray:
        return rng.uniform(-1, 1, size=(len(images), horizon, 7)).astype(np.float32)
    return policy


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--model", default=None, help="bundle directory (default: the default bundle)")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--suite", default="builtin_all")
    parser.add_argument("--execute", type=int, default=8, help="actions run from each predicted chunk")
    parser.add_argument("--random", action="store_true", help="also evaluate a uniform random policy on the same episodes")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from amplify.defaults import default_bundle_dir
    from amplify.policy import AMPLIFY

    torch.manual_seed(args.seed)
    path = Path(args.model) if args.model else default_bundle_dir()
    model = AMPLIFY.load(path)
    results = {"model": str(path)}
    results["policy"] = evaluate(bundle_policy(model), args.suite, args.episodes, args.execute, tuple(model.views))
    print(f"policy: {results['policy']['success_rate']:.1%} success over {args.episodes} episodes")
    if args.random:
        results["random"] = evaluate(random_policy(args.seed), args.suite, args.episodes, args.execute, tuple(model.views))
        print(f"random: {results['random']['success_rate']:.1%} success over {args.episodes} episodes")
    for name, rate in results["policy"]["per_task"].items():
        extra = f"  random {results['random']['per_task'][name]:.0%}" if args.random else ""
        print(f"  {rate:6.0%}  {name}{extra}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0
