"""Action heads of inverse dynamics: condition tokens (b, C, h) -> action chunks (b, A, action_dim).

Every head has ``forward(cond) -> actions`` (what ``act`` returns) and ``loss(cond, actions)``.
The Gaussian head is the original's default; the diffusion and flow-matching heads sample with a
fixed number of steps from a zero, seeded or random start (``sample_noise``), so ``act`` can be
deterministic. Heads register in ``ACTION_HEADS``.
"""
from __future__ import annotations

import math

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


def _horizon_weights(cfg: InverseDynamicsConfig, horizon: int, like: torch.Tensor) -> torch.Tensor:
    w = cfg.action_loss_discount ** torch.arange(horizon, device=like.device, dtype=like.dtype)
    return w / w.sum()


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (b,) times -> (b, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return torch.nn.functional.pad(emb, (0, dim % 2))


class ActionDenoiser(nn.Module):
    """Noisy actions (b, A, d), time (b,) and condition (b, C, h) -> (b, A, d).

    A time token (sinusoidal embedding through an MLP) is prepended to the projected actions; a
    decoder transformer (full self-attention, cross-attention to the condition) runs over them.
    """

    def __init__(self, cfg: InverseDynamicsConfig):
        super().__init__()
        h = cfg.hidden_dim
        self.hidden_dim = h
        self.in_proj = nn.Linear(cfg.action_dim, h)
        self.time_mlp = nn.Sequential(nn.Linear(h, h), nn.GELU(), nn.Linear(h, h))
        self.decoder = TransformerDecoder(cfg.action_horizon + 1, h, cfg.num_heads, cfg.num_layers, cfg.dropout, cfg.bias, mask="full")
        self.out_proj = nn.Linear(h, cfg.action_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        time = self.time_mlp(timestep_embedding(t * 1000.0, self.hidden_dim))[:, None]  # (b, 1, h)
        y = self.decoder(torch.cat([time, self.in_proj(x)], dim=1), cond)  # (b, 1 + A, h)
        return self.out_proj(y[:, 1:])


def _start_noise(cfg: InverseDynamicsConfig, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """The sampler's starting point: zeros, seeded normal noise (the same every call) or fresh noise."""
    if cfg.sample_noise == "zero":
        return like.new_zeros(shape)
    if cfg.sample_noise == "seeded":
        g = torch.Generator(device="cpu").manual_seed(cfg.sample_seed)
        return torch.randn(shape, generator=g).to(like.device, like.dtype)
    return torch.randn(shape, device=like.device, dtype=like.dtype)


class DiffusionActionHead(nn.Module):
    """DDPM-trained denoiser (epsilon prediction, cosine noise schedule over ``diffusion_steps``
    levels); sampling is DDIM with ``diffusion_sample_steps`` deterministic steps from the start
    noise (``sample_noise``). Actions are learned in units of ``action_squash_scale`` and clamped to
    [-scale, scale] when ``action_squash``."""

    def __init__(self, cfg: InverseDynamicsConfig):
        super().__init__()
        self.cfg = cfg
        self.denoiser = ActionDenoiser(cfg)
        steps = cfg.diffusion_steps
        s = 0.008
        x = torch.linspace(0, steps, steps + 1, dtype=torch.float64)
        ac = torch.cos(((x / steps) + s) / (1 + s) * math.pi * 0.5) ** 2
        ac = ac / ac[0]
        betas = (1 - ac[1:] / ac[:-1]).clamp(max=0.999)
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, 0).float(), persistent=False)

    def _eps(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.denoiser(x, t.float() / self.cfg.diffusion_steps, cond)

    def loss(self, cond: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        x0 = actions / self.cfg.action_squash_scale
        b = x0.shape[0]
        t = torch.randint(0, self.cfg.diffusion_steps, (b,), device=x0.device)
        noise = torch.randn_like(x0)
        ab = self.alphas_cumprod[t].view(b, 1, 1)
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        err = (self._eps(xt, t, cond) - noise).pow(2).mean(-1)  # (b, A)
        return (err * _horizon_weights(self.cfg, x0.shape[1], err)).sum(-1).mean()

    def forward(self, cond: torch.Tensor) -> torch.Tensor:  # (b, C, h) -> (b, A, action_dim)
        cfg = self.cfg
        b = cond.shape[0]
        x = _start_noise(cfg, (b, cfg.action_horizon, cfg.action_dim), cond)
        ts = torch.linspace(cfg.diffusion_steps - 1, 0, cfg.diffusion_sample_steps).round().long().tolist()
        x0 = x
        for i, t in enumerate(ts):
            ab = self.alphas_cumprod[t]
            eps = self._eps(x, torch.full((b,), t, device=cond.device), cond)
            x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
            if cfg.action_squash:
                x0 = x0.clamp(-1, 1)
            ab_prev = self.alphas_cumprod[ts[i + 1]] if i + 1 < len(ts) else torch.ones_like(ab)
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
            x = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
        return x0 * cfg.action_squash_scale


class FlowMatchingActionHead(nn.Module):
    """Rectified-flow head: the velocity field from noise (t=0) to actions (t=1) is learned with
    ``(1-t) x0 + t x1`` interpolants; sampling integrates it with ``flow_matching_steps`` Euler steps
    from the start noise (``sample_noise``). Output clamped to [-scale, scale] when ``action_squash``."""

    def __init__(self, cfg: InverseDynamicsConfig):
        super().__init__()
        self.cfg = cfg
        self.denoiser = ActionDenoiser(cfg)

    def loss(self, cond: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        x1 = actions / self.cfg.action_squash_scale
        b = x1.shape[0]
        x0 = torch.randn_like(x1)
        t = torch.rand(b, device=x1.device, dtype=x1.dtype)
        xt = (1 - t.view(b, 1, 1)) * x0 + t.view(b, 1, 1) * x1
        err = (self.denoiser(xt, t, cond) - (x1 - x0)).pow(2).mean(-1)  # (b, A)
        return (err * _horizon_weights(self.cfg, x1.shape[1], err)).sum(-1).mean()

    def forward(self, cond: torch.Tensor) -> torch.Tensor:  # (b, C, h) -> (b, A, action_dim)
        cfg = self.cfg
        b = cond.shape[0]
        x = _start_noise(cfg, (b, cfg.action_horizon, cfg.action_dim), cond)
        n = cfg.flow_matching_steps
        for i in range(n):
            t = torch.full((b,), i / n, device=cond.device, dtype=x.dtype)
            x = x + self.denoiser(x, t, cond) / n
        if cfg.action_squash:
            x = x.clamp(-1, 1)
        return x * cfg.action_squash_scale


ACTION_HEADS: dict[str, type[nn.Module]] = {
    "gaussian": GaussianActionHead,
    "diffusion": DiffusionActionHead,
    "flow": FlowMatchingActionHead,
}


def build_action_head(cfg: InverseDynamicsConfig) -> nn.Module:
    """The head named by ``cfg.head``; a clear error for heads this install does not have."""
    try:
        return ACTION_HEADS[cfg.head](cfg)
    except KeyError:
        raise ValueError(f"action head {cfg.head!r} is not available; have {sorted(ACTION_HEADS)}") from None
