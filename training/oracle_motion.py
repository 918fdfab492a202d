"""A diagnostic policy with PRIVILEGED information: perfect forward dynamics.

At every query it copies the scene, runs the scripted expert ``horizon`` steps ahead on the copy,
computes the exact point tracks of that future (as demonstrations' tracks are computed), tokenizes
them with the bundle's motion tokenizer and gives those codes, with the images, proprioception and
text, to the bundle's inverse dynamics. It is what the bundle would do if its forward dynamics
predicted the expert's motion exactly, so closed-loop success under it separates a forward-dynamics
failure from an inverse-dynamics one. It reads the simulator's state: never a deployable policy.
"""
from __future__ import annotations

import numpy as np
import torch
from einops import rearrange

from amplify.tracks import points_to_velocities
from training.data.tracks import preprocess_tracks
from world.generate import expert_future_tracks
from world.tracks import uniform_grid


class OracleMotionPolicy:
    """Closed-loop policy for ``training.eval_world.evaluate``: the bundle's inverse dynamics on the
    tokenized TRUE future tracks of the expert (privileged; see the module docstring).

    ``codes``: ``"oracle"`` (the expert's future), ``"fd"`` (the bundle's forward dynamics, i.e. the
    bundle itself) or ``"zero"`` (all-zero codes: does the ID use them at all); ``images``: ``False``
    gives the ID all-zero image tokens (does it use the images). ``oracle_tokens`` (with ``"oracle"``):
    only the first that many tokens are the expert's; the forward dynamics predicts the rest given them
    (what getting the first tokens right would be worth). With ``"oracle"``, every call also records how
    many of the forward dynamics' own tokens equal the expert's, per position: :meth:`agreement`."""

    uses_scene = True

    def __init__(self, model, observe, num_points: int | None = None, codes: str = "oracle", images: bool = True,
                 oracle_tokens: int | None = None):
        if codes not in ("oracle", "fd", "zero"):
            raise ValueError(f"codes must be oracle, fd or zero, got {codes!r}")
        seq_len = model.cfg.forward_dynamics.pred_seq_len
        if oracle_tokens is not None and (codes != "oracle" or not 0 <= oracle_tokens <= seq_len):
            raise ValueError(f"oracle_tokens goes with codes='oracle' and must be in 0..{seq_len}, got {oracle_tokens}")
        self.model, self.observe, self.codes_from, self.use_images = model, observe, codes, images
        self.oracle_tokens = oracle_tokens
        self.agree = torch.zeros(seq_len, dtype=torch.long)  # per position: FD's own token == the expert's
        self.agree_prefix = torch.zeros(seq_len + 1, dtype=torch.long)  # calls whose first k tokens all agree
        self.calls = 0
        mt = model.cfg.motion_tokenizer
        self.views, self.num_tracks = list(mt.views), mt.num_tracks
        self.stored_horizon, self.horizon, self.img_size = mt.true_horizon, mt.track_pred_horizon, list(mt.img_shape)
        self.num_points = int(num_points or mt.num_tracks)

    def oracle_codes(self, envs: list) -> torch.Tensor:
        """(b, S, h) codes of the expert's future tracks from each env's current state."""
        return self.oracle_tokens_of(envs)[0]

    def oracle_tokens_of(self, envs: list) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes (b, S, h), indices (b, S)) of the expert's future tracks from each env's current state."""
        q = uniform_grid(self.num_points)
        raw = np.stack([expert_future_tracks(env.task, env.scene.get_state(), self.views, q, self.stored_horizon)[0]
                        for env in envs])  # (b, v, H, N, 2)
        tracks = torch.from_numpy(preprocess_tracks(raw, self.img_size, self.num_tracks, self.horizon)).to(self.model.device)
        return self.model.motion_tokenizer.tokenize(points_to_velocities(tracks, time_dim=2))

    @torch.no_grad()
    def act_envs(self, envs: list, ids: list[int]) -> np.ndarray:
        """An action chunk per active env: (b, A, 7)."""
        m = self.model
        obs = [self.observe(env.get_obs(images=True), self.views) for env in envs]
        images, proprio = np.stack([o[0] for o in obs]), np.stack([o[1] for o in obs])
        text = m.embed_text([env.language_instruction for env in envs])
        tokens = m.image_tokens(images)
        if self.codes_from == "oracle":
            codes, want = self.oracle_tokens_of(envs)
            cond = m.forward_dynamics.get_cond_tokens(rearrange(tokens, "b v p d -> b (v p) d"), text)
            self._record(m.forward_dynamics.predict(cond), want)
            if self.oracle_tokens is not None:
                indices = m.forward_dynamics.predict_uncached(cond, prefix=want[:, :self.oracle_tokens])
                codes = m.motion_tokenizer.indices_to_codes(indices)
        else:
            codes = m.predict_codes(images, text, img_tokens=tokens)[1]
            if self.codes_from == "zero":
                codes = torch.zeros_like(codes)
        img = rearrange(tokens, "b v p d -> b p (v d)")
        if not self.use_images:
            img = torch.zeros_like(img)
        actions = m.inverse_dynamics(img_tokens=img, text_emb=text, proprio=m._tensor(proprio), codes=codes)
        return actions.cpu().numpy()

    def _record(self, got: torch.Tensor, want: torch.Tensor) -> None:
        same = (got.cpu() == want.cpu())  # (b, S)
        self.agree += same.sum(0)
        run = same.long().cumprod(1).sum(1)  # leading agreeing tokens per call
        self.agree_prefix += torch.stack([(run >= k).sum() for k in range(len(self.agree_prefix))])
        self.calls += len(same)

    def agreement(self) -> dict:
        """How often the forward dynamics' own tokens equal the expert's at the states this policy visited:
        per position, and the fraction of calls whose first k tokens all do (k = 0..S)."""
        n = max(self.calls, 1)
        return {"calls": self.calls, "per_position": [round(int(a) / n, 4) for a in self.agree],
                "first_k_all_equal": [round(int(a) / n, 4) for a in self.agree_prefix]}
