"""A diagnostic with PRIVILEGED input: the bundle's inverse dynamics behind a forward dynamics that reads the
scene state instead of the images.

    python -m training.state_fd --model BUNDLE --data DATA [--vision vision.safetensors] [--epochs 10] \
        [--per-task 5] [--execute 2,1] [--json FILE]

It trains a forward dynamics on DATA's demonstrations exactly as ``amplify train fd`` would (the bundle's
FD settings and its motion tokenizer's codes as targets, teacher-forced cross entropy), except that its
condition tokens come from an MLP on :func:`training.learnability.features` of the demonstration's
simulator state (the target's and the goal's offsets from the effector in effector steps, the effector,
the finger opening, whether the target is held, every object's position, the task) instead of from image
tokens. Served closed loop with the bundle's own inverse dynamics (which still reads the images, the
proprioception and these codes), it says what the chain reaches when the forward dynamics' input carries
what an exact-state policy acts on. With ``--vision`` the objects' positions come from that file's state
head (``python -m training.vision_pretrain``), as :mod:`training.perception_bound` perceives them, in
training and closed loop alike; the effector, opening and held flag stay exact.

It reads the simulator's state at every step: never a deployable policy (docs/training.md, "The chain
acts when the forward dynamics knows where the target is").
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn as nn
from einops import rearrange

from amplify.models.forward_dynamics import ForwardDynamics
from amplify.tracks import points_to_velocities
from training.eval_world import evaluate, observation
from training.learnability import features
from world.scene import N_EE

COND_TOKENS = 8  # condition tokens the MLP writes (as many as the 64 px trunk's two views of 2x2)


def perceived_state(state: np.ndarray, estimate: np.ndarray | None) -> np.ndarray:
    """The state with the objects' positions replaced by a vision head's ``estimate`` (when given)."""
    out = np.array(state, np.float64)
    if estimate is not None:
        out[N_EE:] = estimate[N_EE:]
    return out


class StateConditionedFD(nn.Module):
    """An MLP from exact-state features (b, F) to ``COND_TOKENS`` image-token-sized vectors, then a
    :class:`ForwardDynamics` of the bundle's configuration (its text token as usual)."""

    def __init__(self, fd_cfg, quantize: nn.Module, num_features: int, mean: torch.Tensor, std: torch.Tensor,
                 hidden: int = 256):
        super().__init__()
        cfg = dataclasses.replace(fd_cfg, img_tokens_per_view=COND_TOKENS // fd_cfg.num_views)
        self.fd = ForwardDynamics(cfg, quantize=quantize)
        self.embed_dim = cfg.img_embed_dim
        self.encode = nn.Sequential(nn.Linear(num_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                    nn.Linear(hidden, COND_TOKENS * cfg.img_embed_dim))
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float())

    def cond(self, x: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """(b, F) features, (b, E) text -> (b, C, h) condition tokens."""
        tokens = self.encode((x - self.mean) / self.std).view(len(x), COND_TOKENS, self.embed_dim)
        return self.fd.get_cond_tokens(tokens, text_emb)

    def trainable(self) -> list[nn.Parameter]:
        """Everything but the tokenizer's (shared, frozen) quantizer."""
        return [p for n, p in self.named_parameters() if not n.startswith("fd.quantize.")]


def demonstration_samples(dataset, tokenizer, tasks: list, estimator=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every sample of an :class:`~training.data.dataset.AmplifyDataset` of the built-in world ->
    (features (N, F), the tokenizer's indices of its true tracks (N, S), task indices (N,) into ``tasks``).
    With ``estimator`` (:class:`training.vision_pretrain.StateEstimator`) the objects are perceived."""
    names = [t.name for t in tasks]
    scenes = {t.name: t.new_scene() for t in tasks}
    rows, tracks, states = [], [], {}
    for d, t in dataset.samples:
        rec = dataset.demos[int(d)]
        name = dataset.tasks[rec.task].name
        if (rec.file, rec.key) not in states:
            with h5py.File(rec.file, "r") as f:
                states[(rec.file, rec.key)] = np.asarray(f["data"][rec.key]["states"])
        rows.append((name, states[(rec.file, rec.key)][int(t)]))
        tracks.append(rec.tracks[int(t)])
    estimates: list[np.ndarray | None] = [None] * len(rows)
    if estimator is not None:
        for i in range(0, len(rows), 64):
            batch = range(i, min(i + 64, len(rows)))
            images = np.stack([dataset.images(j) for j in batch])
            est = estimator.estimate(images, ee=np.stack([rows[j][1][0:3] for j in batch]))
            for j, e in zip(batch, est):
                estimates[j] = e
    feats = []
    for (name, state), est in zip(rows, estimates):
        scene = scenes[name]
        scene.set_state(perceived_state(state, est))
        feats.append(features(scene, tasks[names.index(name)], names))
    with torch.no_grad():
        tr = torch.from_numpy(np.stack(tracks)).float()
        idx = torch.cat([tokenizer.tokenize(points_to_velocities(tr[i:i + 256], time_dim=2))[1]
                         for i in range(0, len(tr), 256)])
    task_ids = torch.tensor([names.index(name) for name, _ in rows])
    return torch.from_numpy(np.stack(feats)), idx, task_ids


def train_state_fd(model: StateConditionedFD, x: torch.Tensor, targets: torch.Tensor, text: torch.Tensor,
                   epochs: int = 10, batch_size: int = 32, lr: float = 1e-3, seed: int = 0, log=print) -> StateConditionedFD:
    """Teacher-forced cross entropy, AdamW with a one-cycle schedule; ``text`` (N, E) per sample."""
    torch.manual_seed(seed)
    for p in model.fd.quantize.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(model.trainable(), lr=lr, weight_decay=1e-4)
    steps = max(1, epochs * math.ceil(len(x) / batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.02)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        i = torch.randint(0, len(x), (batch_size,), generator=gen)
        loss, _ = model.fd.loss(model.cond(x[i], text[i]), targets[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 500 == 0 or step == steps - 1:
            log(f"state FD step {step + 1}/{steps} loss {loss.item():.3f} ({time.perf_counter() - t0:.0f} s)")
    return model.eval()


@torch.no_grad()
def token_accuracy(model: StateConditionedFD, x: torch.Tensor, targets: torch.Tensor, text: torch.Tensor) -> dict:
    """Autoregressive (argmax) accuracy on held-out samples: all tokens, and the first."""
    pred = torch.cat([model.fd.predict(model.cond(x[i:i + 256], text[i:i + 256])) for i in range(0, len(x), 256)])
    return {"tokens": float((pred == targets).float().mean()), "first": float((pred[:, 0] == targets[:, 0]).float().mean())}


class StateFDPolicy:
    """Closed loop for ``training.eval_world.evaluate``: this FD's codes from each env's (perceived)
    state, the bundle's inverse dynamics on them with the images, proprioception and text."""

    uses_scene = True

    def __init__(self, bundle, fd: StateConditionedFD, tasks: list, text: torch.Tensor, estimator=None):
        self.bundle, self.fd, self.text, self.estimator = bundle, fd, text, estimator
        self.names = [t.name for t in tasks]
        self.views = list(bundle.cfg.motion_tokenizer.views)

    @torch.no_grad()
    def act_envs(self, envs: list, ids: list[int]) -> np.ndarray:
        m = self.bundle
        obs = [observation(env.get_obs(images=True), self.views) for env in envs]
        images, proprio = np.stack([o[0] for o in obs]), np.stack([o[1] for o in obs])
        states = [env.scene.get_state() for env in envs]
        est = (self.estimator.estimate(images, ee=np.stack([s[0:3] for s in states])) if self.estimator is not None
               else [None] * len(envs))
        feats = []
        for env, state, e in zip(envs, states, est):
            scene = env.scene
            if e is not None:  # a copy of the scene with the objects where the vision head sees them
                scene = env.task.new_scene()
                scene.set_state(perceived_state(state, e))
            feats.append(features(scene, env.task, self.names))
        tids = torch.tensor([self.names.index(env.task.name) for env in envs])
        text = self.text[tids]
        indices = self.fd.fd.predict(self.fd.cond(torch.from_numpy(np.stack(feats)), text))
        tokens = m.image_tokens(images)
        actions = m.inverse_dynamics(img_tokens=rearrange(tokens, "b v p d -> b p (v d)"), text_emb=text,
                                     proprio=m._tensor(proprio), codes=m.motion_tokenizer.indices_to_codes(indices))
        return actions.cpu().numpy()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.state_fd", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="bundle directory (its MT, FD settings and ID are used)")
    p.add_argument("--data", required=True, help="built-in world data root (python -m world.generate)")
    p.add_argument("--suite", default="builtin_all")
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--frame-stride", type=int, default=2)
    p.add_argument("--vision", default=None, help="a vision file with a state head: perceive the objects with it")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--per-task", type=int, default=5, help="benchmark init states 0..K-1 of every task")
    p.add_argument("--execute", default="2,1", help="actions executed per chunk, one closed-loop run each")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)

    from amplify.policy import AMPLIFY
    from amplify.threads import apply_threads
    from training.data.dataset import AmplifyDataset
    from world import get_suite

    apply_threads()
    bundle = AMPLIFY.load(a.model)
    mtc = bundle.cfg.motion_tokenizer
    tasks = get_suite(a.suite)
    with torch.no_grad():
        text = bundle.embed_text([t.instruction for t in tasks])  # (tasks, E)
    estimator = None
    if a.vision:
        from training.vision_pretrain import StateEstimator
        estimator = StateEstimator(a.vision)
    sets = [AmplifyDataset(a.data, [sel], list(mtc.views), mtc.num_tracks, mtc.track_pred_horizon, 1,
                           img_size=list(mtc.img_shape), frame_stride=a.frame_stride)
            for sel in (f"[{a.suite}:traj{1 - a.val_fraction:g}]", f"[{a.suite}:traj-{a.val_fraction:g}]")]
    (x, y, t), (vx, vy, vt) = (demonstration_samples(s, bundle.motion_tokenizer, tasks, estimator) for s in sets)
    print(f"{len(x)} training and {len(vx)} held-out samples, {x.shape[1]} features", file=sys.stderr)
    torch.manual_seed(a.seed)  # the model's initialization
    model = StateConditionedFD(bundle.cfg.forward_dynamics, bundle.motion_tokenizer.quantize, x.shape[1],
                               x.mean(0), x.std(0) + 1e-3)
    train_state_fd(model, x, y, text[t], a.epochs, a.batch_size, seed=a.seed, log=lambda s: print(s, file=sys.stderr))
    report: dict = {"privileged": True, "model": a.model, "vision": a.vision, "epochs": a.epochs,
                    "held_out_tokens": token_accuracy(model, vx, vy, text[vt]), "closed_loop": {}}
    print(f"held-out token accuracy: {json.dumps(report['held_out_tokens'])}")
    policy = StateFDPolicy(bundle, model, tasks, text, estimator)
    for e in (int(s) for s in a.execute.split(",")):
        res = evaluate(policy, suite=a.suite, per_task=a.per_task, execute=e, name=f"state FD, executing {e}",
                       progress=not a.no_progress)
        report["closed_loop"][str(e)] = {k: res[k] for k in ("episodes", "successes", "success_rate", "per_family", "per_task")}
        print(f"executing {e}: {res['successes']}/{res['episodes']} {json.dumps(res['per_family'])}")
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
