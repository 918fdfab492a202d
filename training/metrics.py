"""Training and validation metrics: track reconstruction error and accuracy within pixel
tolerances, codebook perplexity, token accuracy, action error."""
from __future__ import annotations

import torch

from amplify.tracks import velocities_to_points

PIXEL_TOLERANCES = (1, 2, 4)


@torch.no_grad()
def track_metrics(pred_vel: torch.Tensor, gt_tracks: torch.Tensor, img_size: list[int], prefix: str = "track") -> dict[str, torch.Tensor]:
    """Predicted velocities (b, v, t, n, 2) integrated from the true first points vs true tracks
    (b, v, H, n, 2), in pixels, over points inside the image: MSE, L1 (per coordinate), and the
    fraction within 1/2/4 px (Euclidean). The first point (given) is left out."""
    pred = velocities_to_points(pred_vel.float(), time_dim=2, init_points=gt_tracks[:, :, :1].float())[:, :, 1:]
    gt = gt_tracks[:, :, 1:].float()
    half = torch.as_tensor(list(img_size), dtype=gt.dtype, device=gt.device) / 2
    err = (pred - gt) * half  # (b, v, t, n, 2) px
    inside = (gt.abs() <= 1).all(-1)  # (b, v, t, n)
    if not inside.any():
        inside = torch.ones_like(inside)
    e = err[inside]  # (m, 2)
    dist = e.norm(dim=-1)
    out = {f"{prefix}_mse_px": e.pow(2).mean(), f"{prefix}_l1_px": e.abs().mean()}
    for tol in PIXEL_TOLERANCES:
        out[f"{prefix}_acc_{tol}px"] = (dist <= tol).float().mean()
    return out


@torch.no_grad()
def codebook_perplexity(indices: torch.Tensor, num_codes: int) -> dict[str, torch.Tensor]:
    """Perplexity of the code distribution in ``indices`` divided by ``num_codes`` (1 = uniform use),
    and the fraction of codes used."""
    counts = torch.bincount(indices.reshape(-1).long() % num_codes, minlength=num_codes).float()
    p = counts / counts.sum().clamp_min(1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"codebook_perplexity": entropy.exp() / num_codes, "codebook_usage": (counts > 0).float().mean()}


@torch.no_grad()
def action_metrics(pred: torch.Tensor, true: torch.Tensor) -> dict[str, torch.Tensor]:
    """Action chunks (b, A, d): MSE and L1 over the chunk, L1 of the first action (what runs first)."""
    d = pred.float() - true.float()
    return {"action_mse": d.pow(2).mean(), "action_l1": d.abs().mean(), "action_l1_first": d[:, 0].abs().mean()}


class MetricAverager:
    """Sample-weighted running means of metric dicts."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.n = 0

    def add(self, metrics: dict[str, torch.Tensor | float], weight: int) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v) * weight
        self.n += weight

    def result(self) -> dict[str, float]:
        return {k: v / max(self.n, 1) for k, v in self.sums.items()}
