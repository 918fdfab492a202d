"""Action heads of inverse dynamics: condition tokens (b, C, h) -> action chunks (b, A, action_dim).

Every head has ``forward(cond) -> actions`` (what ``act`` returns) and ``loss(cond, actions)``.
The Gaussian head is the original's default; other heads register in ``ACTION_HEADS``.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from amplify.config import InverseDynamicsConfig
from amplify.layers import TransformerDecoder


class GaussianActionHead(nn.Module):
    """Learned latents (1, A, h) attend to the condition through a decoder transformer;
    ``action_proj`` gives the mean, squashed by ``tanh * scale`` when ``action_squash``.

    Training: negative log-likelihood of a normal with std ``std`` truncated to [-scale, scale],
    normalized by the truncation mass, discounted over the horizon by ``action_loss_discount``.
    """

    def __init__(self, cfg: InverseDynamicsConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden_dim
        self.latents = nn.Parameter(torch.randn(1, cfg.action_horizon, h) * 0.02)
        self.decoder = TransformerDecoder(cfg.action_horizon, h, cfg.num_heads, cfg.num_layers, cfg.dropout, cfg.bias, mask="full")
        self.action_proj = nn.Linear(h, cfg.action_dim)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:  # (b, C, h) -> (b, A, action_dim)
        x = self.decoder(self.latents.expand(cond.shape[0], -1, -1), cond)
        mean = self.action_proj(x)
        if self.cfg.action_squash:
            mean = torch.tanh(mean) * self.cfg.action_squash_scale
        return mean

    def loss(self, cond: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        mean = self(cond)
        std = self.cfg.std
        scale = self.cfg.action_squash_scale
        normal = torch.distributions.Normal(mean, std)
        log_prob = normal.log_prob(actions)
        if self.cfg.action_squash:
            mass = normal.cdf(torch.full_like(mean, scale)) - normal.cdf(torch.full_like(mean, -scale))
            log_prob = log_prob - torch.log(mass.clamp_min(1e-6))
        horizon = actions.shape[1]
        w = self.cfg.action_loss_discount ** torch.arange(horizon, device=actions.device, dtype=actions.dtype)
        w = w / w.sum()
        return -(log_prob.sum(-1) * w).sum(-1).mean()


ACTION_HEADS: dict[str, type[nn.Module]] = {"gaussian": GaussianActionHead}


def build_action_head(cfg: InverseDynamicsConfig) -> nn.Module:
    """The head named by ``cfg.head``; a clear error for heads this install does not have."""
    try:
        return ACTION_HEADS[cfg.head](cfg)
    except KeyError:
        raise ValueError(f"action head {cfg.head!r} is not available; have {sorted(ACTION_HEADS)}") from None
