"""Is a vision trunk precise enough to act? Exact-state behaviour cloning with perceived positions.

    python -m training.perception_bound --vision runs/vision/vision.safetensors [--vision B.safetensors ...]
        [--per-task 14] [--demos-per-task 50] [--steps 3000] [--perceive objects,all] [--error 0.01,0.02] [--jitter 0.02]
        [--json FILE]

The MLP of :mod:`training.learnability` is trained on the exact state of expert demonstrations
(never a benchmark state) and then runs closed loop on the benchmark's held-out initial states
four ways, on the same episodes:

* ``exact``: its features from the exact state (the learnability bound);
* ``objects``: every object's position replaced, at every step, by what the vision file's state
  head (saved by the pretraining, :func:`training.vision_pretrain.save_pretrained`) estimates from
  the rendered images of that step (both views, upright, 128 px as the policy gets them); the
  effector stays exact, as the policy has it from proprioception (joints);
* ``all``: the effector's position estimated from the images too;
* ``expert``: the scripted expert;
* ``error S`` (``--error``): no images; every object's xy off by a normal error (std S) fixed per
  episode: the error a perception may have;
* ``jitter S`` (``--jitter``): the same with a fresh error at every step (noise, not bias).

The finger opening (proprioception) and whether the target is held stay exact in every variant.
The gap between ``exact`` and ``objects`` is what this vision's perception error costs a policy
that otherwise acts perfectly.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from training.learnability import closed_loop, demonstrations, features, train

PERCEIVE = ("objects", "all")


def perceiving(estimator, names: list[str], perceive: str = "objects"):
    """``observe(envs) -> features (b, F)`` with positions estimated by ``estimator`` (a
    :class:`~training.vision_pretrain.StateEstimator`) from each env's rendered views of this step."""
    from world.render import VIEWS
    from world.scene import N_EE

    if perceive not in PERCEIVE:
        raise ValueError(f"perceive must be one of {PERCEIVE}, got {perceive!r}")
    scratch: dict[str, object] = {}

    def observe(envs: list) -> np.ndarray:
        images = np.stack([np.stack([env.render_upright()[v][0] for v in VIEWS]) for env in envs])  # (b, v, S, S, 3)
        ee = np.stack([env.scene.ee for env in envs])
        objects = [tuple(o.name for o in env.scene.objects) for env in envs]
        est = estimator.estimate(images, ee=ee if perceive == "objects" else None, objects=objects)
        out = []
        for env, e in zip(envs, est):
            s = env.scene.get_state()
            if perceive == "all":
                s[0:3] = e[0:3]
            s[N_EE:] = e[N_EE:]
            scene = scratch.setdefault(env.task.name, env.task.new_scene())
            scene.set_state(s)
            out.append(features(scene, env.task, names))
        return np.stack(out)

    return observe


def misplacing(names: list[str], error: float, seed: int = 0, per_step: bool = False):
    """``observe(envs) -> features (b, F)`` with every object's xy off by an error fixed per episode and
    object (normal, std ``error`` per coordinate; mean absolute error 0.8 ``error``): what a
    perception that is wrong by that much, consistently, would give. ``per_step``: a fresh error at
    every step instead (unbiased jitter, which a closed loop averages out)."""
    from world.scene import N_EE

    rng = np.random.default_rng(seed)
    offsets: dict[int, np.ndarray] = {}
    scratch: dict[str, object] = {}

    def observe(envs: list) -> np.ndarray:
        out = []
        for env in envs:
            s = env.scene.get_state()
            if per_step:
                off = rng.normal(0.0, error, (env.scene.n, 2))
            else:
                off = offsets.setdefault(id(env), rng.normal(0.0, error, (env.scene.n, 2)))
            pos = s[N_EE:].reshape(-1, 3)
            pos[:, :2] += off
            s[N_EE:] = pos.ravel()
            scene = scratch.setdefault(env.task.name, env.task.new_scene())
            scene.set_state(s)
            out.append(features(scene, env.task, names))
        return np.stack(out)

    return observe


def expert_policy():
    """``(policy, observe)`` running the scripted expert on each env's scene."""
    from world import ScriptedExpert

    experts: dict[int, object] = {}

    def policy(envs: list) -> np.ndarray:
        return np.stack([experts.setdefault(id(env), ScriptedExpert(env.task)).act(env.scene) for env in envs])

    return policy, (lambda envs: envs)


def main(argv: list[str] | None = None) -> None:
    from world import get_suite
    from training.vision_pretrain import StateEstimator

    p = argparse.ArgumentParser(prog="python -m training.perception_bound", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vision", action="append", default=[], help="a pretrained vision.safetensors (repeatable)")
    p.add_argument("--error", default="", help="comma list of std devs: also run with objects' xy off by a fixed "
                                               "normal error per episode (no images), to see what error is tolerable")
    p.add_argument("--jitter", default="", help="comma list of std devs: the same, with a fresh error at every step")
    p.add_argument("--suite", default="builtin_all")
    p.add_argument("--per-task", type=int, default=14, help="benchmark episodes per task")
    p.add_argument("--demos-per-task", type=int, default=50)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--perceive", default="objects,all", help="comma list of: objects, all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    names = [t.name for t in get_suite(a.suite)]
    t0 = time.perf_counter()
    x, y, n = demonstrations(a.suite, a.demos_per_task, a.seed)
    model = train(x, y, a.steps, seed=a.seed)
    print(f"BC MLP on {n} exact-state samples ({time.perf_counter() - t0:.0f} s)", flush=True)
    results: dict = {"args": vars(a), "samples": n}
    policy, observe = expert_policy()
    results["expert"] = closed_loop(policy, a.suite, a.per_task, observe=observe)
    results["exact"] = closed_loop(model.act, a.suite, a.per_task)
    for err in [float(e) for e in a.error.split(",") if e]:
        results[f"error {err:g}"] = closed_loop(model.act, a.suite, a.per_task, observe=misplacing(names, err, a.seed))
    for err in [float(e) for e in a.jitter.split(",") if e]:
        results[f"jitter {err:g}"] = closed_loop(model.act, a.suite, a.per_task,
                                                 observe=misplacing(names, err, a.seed, per_step=True))
    for path in a.vision:
        est = StateEstimator(path)
        for mode in a.perceive.split(","):
            t = time.perf_counter()
            results[f"{path}:{mode}"] = closed_loop(model.act, a.suite, a.per_task, observe=perceiving(est, names, mode))
            print(f"{path} ({mode}): {time.perf_counter() - t:.0f} s", flush=True)
    for key, r in results.items():
        if isinstance(r, dict) and "success_rate" in r:
            fam = " ".join(f"{k} {v:.0%}" for k, v in r["per_family"].items())
            print(f"{r['successes']:4d}/{r['episodes']} ({r['success_rate']:6.1%})  {key}  [{fam}]")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
