"""Can the expert be imitated with perfect perception? Behaviour cloning from the exact state.

    python -m training.learnability [--demos-per-task 50] [--per-task 50] [--steps 3000] [--suite builtin_all] [--dart 0]

An MLP maps what a policy could perceive exactly (effector position, finger opening, every object's
position, whether the target is held, the task as one-hot) to the expert's action (xyz deltas by
regression, the gripper by classification). It trains on expert demonstrations from
``world.tasks.demo_init_states`` (never a benchmark state) and runs closed loop on the benchmark's
init states (``world.get_init_states``), beside the expert on the same states. This bounds what an
image-based policy can reach when its perception is perfect: if this check fails, the world or the
expert (hidden state, unrecoverable situations) is the limit, not the learning recipe.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import numpy as np
import torch
from torch import nn


def features(scene, task, tasks: list) -> np.ndarray:
    """(F,) exact-state features: ee xyz, finger opening, target held, the target's and the goal's
    positions relative to the effector (what the wrist camera shows; the goal is the bowl, or a point
    at the goal edge level with the target; scaled, and in effector steps clipped to +-4), every
    object's position, the task one-hot."""
    from world.scene import MAX_STEP
    from world.tasks import EDGES

    onehot = np.zeros(len(tasks))
    onehot[tasks.index(task.name)] = 1.0
    ee = scene.ee
    p = scene.pos(task.target)
    if task.family == "pick":
        goal = scene.pos(int(task.goal))
    elif task.family == "push":
        d = np.array(EDGES[str(task.goal)])
        goal = np.array([p[0], p[1], 0.0]) + np.array([*d, 0.0]) * 0.3
    else:
        goal = np.array([p[0], p[1], 0.2])
    held = float(scene.held == task.target)
    def steps(v: np.ndarray) -> np.ndarray:  # a displacement in effector steps, both raw and clipped
        return np.concatenate([v * 4, np.clip(v / MAX_STEP, -4, 4)])

    return np.concatenate([ee, [scene.grip, held], steps(p - ee), steps(goal - ee), scene.positions().ravel(),
                           onehot]).astype(np.float32)


def demonstrations(suite: str, demos_per_task: int, seed: int = 0, dart: float = 0.0) -> tuple[np.ndarray, np.ndarray, int]:
    """Expert rollouts from demonstration init states -> (features (K, F), actions (K, 7), steps).

    ``dart``: noise (std) on the executed actions; the labels stay the expert's (see world.generate.rollout)."""
    from world import get_suite
    from world.generate import rollout
    from world.tasks import demo_init_states

    tasks = get_suite(suite)
    names = [t.name for t in tasks]
    xs, ys = [], []
    for task in tasks:
        scene = task.new_scene()
        for k, init in enumerate(demo_init_states(task, demos_per_task, seed)):
            ep = rollout(task, init, seed=k, render_images=False, dart=dart)
            if not ep["success"]:
                continue
            for st, a in zip(ep["states"], ep["actions"]):
                scene.set_state(st)
                xs.append(features(scene, task, names))
                ys.append(a)
    return np.stack(xs), np.stack(ys).astype(np.float32), len(xs)


class StatePolicy(nn.Module):
    """MLP: features -> xyz deltas (3) and a gripper logit (1)."""

    def __init__(self, dim: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (b, F) -> (b, 4)
        return self.net(x)

    def act(self, x: np.ndarray) -> np.ndarray:
        """(b, F) -> (b, 7) LIBERO actions."""
        with torch.no_grad():
            out = self(torch.from_numpy(x)).numpy()
        a = np.zeros((len(x), 7), np.float32)
        a[:, :3] = np.clip(out[:, :3], -1, 1)
        a[:, 6] = np.where(out[:, 3] > 0, 1.0, -1.0)
        return a


def train(x: np.ndarray, y: np.ndarray, steps: int = 3000, batch: int = 256, lr: float = 1e-3, seed: int = 0) -> StatePolicy:
    """Fit the MLP: MSE on xyz, binary cross entropy on the gripper (close = 1)."""
    torch.manual_seed(seed)
    model = StatePolicy(x.shape[1])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(X), (batch,), generator=g)
        out = model(X[idx])
        loss = nn.functional.mse_loss(out[:, :3], Y[idx, :3]) + \
            nn.functional.binary_cross_entropy_with_logits(out[:, 3], (Y[idx, 6] > 0).float())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def closed_loop(policy, suite: str, per_task: int, observe=None) -> dict:
    """Run ``policy(features (b, F)) -> (b, 7)`` on benchmark init states 0..per_task-1 of every task.

    ``observe(envs) -> (b, F)``: what the policy gets from the active envs (default: the exact
    :func:`features`; :mod:`training.perception_bound` puts perceived positions in)."""
    from world import BuiltinEnv, get_suite

    tasks = get_suite(suite)
    names = [t.name for t in tasks]
    envs = []
    for task in tasks:
        for k in range(per_task):
            env = BuiltinEnv(task, render=False)
            env.set_init_state(env.get_init_states()[k])
            envs.append(env)
    done = [False] * len(envs)
    ok = [False] * len(envs)
    for t in range(max(e.task.max_steps for e in envs)):
        active = [i for i, d in enumerate(done) if not d]
        if not active:
            break
        if observe is None:
            acts = policy(np.stack([features(envs[i].scene, envs[i].task, names) for i in active]))
        else:
            acts = policy(observe([envs[i] for i in active]))
        for a, i in zip(acts, active):
            _, _, success, _ = envs[i].step(a)
            if success or envs[i].steps >= envs[i].task.max_steps:
                done[i], ok[i] = True, bool(success)
    per_task, per_family = defaultdict(list), defaultdict(list)
    for env, s in zip(envs, ok):
        per_task[env.task.name].append(s)
        per_family[env.task.family].append(s)
    return {"success_rate": float(np.mean(ok)), "successes": int(sum(ok)), "episodes": len(envs),
            "per_task": {k: float(np.mean(v)) for k, v in per_task.items()},
            "per_family": {k: float(np.mean(v)) for k, v in per_family.items()}}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.learnability", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="builtin_all")
    p.add_argument("--demos-per-task", type=int, default=50)
    p.add_argument("--per-task", type=int, default=50, help="benchmark episodes per task")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--dart", type=float, default=0.0, help="noise on the demos' executed actions (labels stay the expert's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    x, y, n = demonstrations(a.suite, a.demos_per_task, a.seed, a.dart)
    t1 = time.perf_counter()
    model = train(x, y, a.steps, seed=a.seed)
    t2 = time.perf_counter()
    res = closed_loop(model.act, a.suite, a.per_task)
    t3 = time.perf_counter()
    print(f"{n} samples from {a.demos_per_task} demos per task ({t1 - t0:.0f} s); MLP {a.steps} steps ({t2 - t1:.0f} s); "
          f"closed loop on {res['episodes']} benchmark episodes ({t3 - t2:.0f} s)")
    for k, v in res["per_task"].items():
        print(f"  {v:6.0%}  {k}")
    for k, v in res["per_family"].items():
        print(f"  {v:6.0%}  family {k}")
    print(f"BC from exact state: {res['successes']}/{res['episodes']} ({res['success_rate']:.1%})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "samples": n, **res}, f, indent=1)


if __name__ == "__main__":
    main()
