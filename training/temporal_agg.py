"""Temporal aggregation of action chunks at evaluation (ACT's temporal ensembling, as the original
evaluates): the policy is queried every step, and the action run at step t is the weighted mean of
what every chunk predicted within its horizon said for step t, weights ``exp(-m * i)`` with i = 0 the
oldest prediction (``m`` > 0 favours older predictions, m = 0 averages them equally).
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch


class TemporalEnsemble:
    """A closed-loop policy over an AMPLIFY bundle for ``training.eval_world.evaluate`` (with
    ``execute=1``): it reads each env's observation itself (``uses_scene``) to keep one chunk history
    per episode."""

    uses_scene = True

    def __init__(self, model, views: list[str], observe, m: float = 0.1):
        """``observe(env obs dict, views) -> (images (v, H, W, 3) uint8, proprio (9,))``, e.g.
        ``training.eval_world.observation``."""
        self.model, self.views, self.observe, self.m = model, list(views), observe, float(m)
        self.history: dict[int, list[tuple[int, np.ndarray]]] = defaultdict(list)  # id -> [(start step, (A, 7))]
        self.step: dict[int, int] = defaultdict(int)

    def act_envs(self, envs: list, ids: list[int]) -> np.ndarray:
        """One action per active env: (b, 1, 7)."""
        obs = [self.observe(env.get_obs(images=True), self.views) for env in envs]
        images = np.stack([o[0] for o in obs])
        proprio = np.stack([o[1] for o in obs])
        with torch.no_grad():
            chunks = self.model.act(images, proprio, text=[env.language_instruction for env in envs]).cpu().numpy()
        out = []
        for i, chunk in zip(ids, chunks):
            t = self.step[i]
            hist = [(s, c) for s, c in self.history[i] if t - s < len(c)] + [(t, chunk)]
            self.history[i] = hist
            preds = np.stack([c[t - s] for s, c in hist])  # oldest first
            w = np.exp(-self.m * np.arange(len(preds)))
            out.append((w[:, None] * preds).sum(0) / w.sum())
            self.step[i] = t + 1
        return np.stack(out)[:, None].astype(np.float32)
