"""Training and validation metrics: track reconstruction error and accuracy within pixel
tolerances, codebook perplexity, token accuracy, action error."""
from __future__ import annotations

import torch

from amplify.tracks import relative_class_targets, relative_classes_to_velocities, velocities_to_points

PIXEL_TOLERANCES = (1, 2, 4)
MOVING_PX = 0.5  # a point-step "moves" when its true displacement exceeds this (pixels)


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
def grid_velocities(gt_tracks: torch.Tensor, cls_img_size: list[int], rel_cls_img_size: list[int]) -> torch.Tensor:
    """The best the relative grid can do: each true step (b, v, H, n, 2) -> its class -> velocity
    (b, v, t, n, 2), i.e. the targets' own quantization (and clamping to the grid)."""
    prev, nxt = gt_tracks[:, :, :-1].float(), gt_tracks[:, :, 1:].float()
    cls = relative_class_targets(torch.nan_to_num(prev), torch.nan_to_num(nxt), cls_img_size, rel_cls_img_size)
    return relative_classes_to_velocities(cls, cls_img_size, rel_cls_img_size, prev.dtype)


@torch.no_grad()
def motion_metrics(pred_vel: torch.Tensor, gt_tracks: torch.Tensor, img_size: list[int], views: list[str],
                   prefix: str = "track", grid_vel: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-view metrics that do not hide failure, over point-steps whose both ends are inside the image.

    For each view ``<view>``: ``{prefix}_<view>_acc_{k}px`` (tracks integrated from the true first
    point, as :func:`track_metrics`, all in-image points), ``{prefix}_<view>_moving_acc_{k}px`` (only
    points whose true step moves more than ``MOVING_PX``), ``{prefix}_<view>_vel_err_px`` and
    ``{prefix}_<view>_moving_vel_err_px`` (mean Euclidean per-step velocity error, pixels) and the
    fraction of moving point-steps; with ``grid_vel`` (:func:`grid_velocities`) also
    ``..._moving_vel_err_grid_px``, the grid's own quantization error on the same points. The
    no-motion predictor's values come from calling this with ``pred_vel = 0`` (``nomotion_`` keys
    in the trainers' validation)."""
    half = torch.as_tensor(list(img_size), dtype=torch.float32, device=gt_tracks.device) / 2
    gt = gt_tracks.float()
    gvel = (gt[:, :, 1:] - gt[:, :, :-1]) * half  # (b, v, t, n, 2) px
    pvel = pred_vel.float() * half
    pred_pts = velocities_to_points(pred_vel.float(), time_dim=2, init_points=gt[:, :, :1])[:, :, 1:]
    perr = ((pred_pts - gt[:, :, 1:]) * half).norm(dim=-1)  # (b, v, t, n) position error, px
    inside = (gt[:, :, 1:].abs() <= 1).all(-1) & (gt[:, :, :-1].abs() <= 1).all(-1)  # (b, v, t, n)
    moving = inside & (gvel.norm(dim=-1) > MOVING_PX)
    verr = (pvel - gvel).norm(dim=-1)
    out: dict[str, torch.Tensor] = {}
    nan = torch.tensor(float("nan"))
    for i, view in enumerate(views):
        key = f"{prefix}_{view}"
        ins, mov = inside[:, i], moving[:, i]
        out[f"{key}_moving_frac"] = mov.float().sum() / ins.float().sum().clamp_min(1)
        for tol in PIXEL_TOLERANCES:
            out[f"{key}_acc_{tol}px"] = (perr[:, i][ins] <= tol).float().mean() if ins.any() else nan
            out[f"{key}_moving_acc_{tol}px"] = (perr[:, i][mov] <= tol).float().mean() if mov.any() else nan
        out[f"{key}_vel_err_px"] = verr[:, i][ins].mean() if ins.any() else nan
        out[f"{key}_moving_vel_err_px"] = verr[:, i][mov].mean() if mov.any() else nan
        if grid_vel is not None:
            gerr = (grid_vel[:, i].float() * half - gvel[:, i]).norm(dim=-1)
            out[f"{key}_moving_vel_err_grid_px"] = gerr[mov].mean() if mov.any() else nan
    return out


@torch.no_grad()
def per_view_codebook_usage(indices: torch.Tensor, num_codes: int, views: list[str], per_view: bool) -> dict[str, torch.Tensor]:
    """Codebook usage of each view's tokens (per-view tokenizers: tokens ordered view-major), else of all
    tokens as ``codebook_usage_all``. ``indices`` (b, S)."""
    if not per_view:
        return {"codebook_usage_all": codebook_perplexity(indices, num_codes)["codebook_usage"]}
    chunks = indices.reshape(indices.shape[0], len(views), -1)
    return {f"codebook_usage_{v}": codebook_perplexity(chunks[:, i], num_codes)["codebook_usage"]
            for i, v in enumerate(views)}


@torch.no_grad()
def fsq_input_metrics(fsq: torch.nn.Module, z: torch.Tensor) -> dict[str, torch.Tensor]:
    """How an FSQ quantizer uses its levels on latents ``z`` (..., h): the mean |project_in(z)|, and the
    fraction of (token, dimension) values that round to an extreme level (saturation; with levels
    used evenly it would be about 2 / level)."""
    x = fsq.project_in(z.float())
    levels = fsq._levels.to(x.device)
    q = torch.round(fsq.bound(x)) + levels // 2  # level index in [0, level - 1]
    extreme = (q <= 0) | (q >= levels - 1)
    return {"fsq_input_abs": x.abs().mean(), "fsq_saturation": extreme.float().mean()}


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
        self.weights: dict[str, float] = {}
        self.n = 0

    def add(self, metrics: dict[str, torch.Tensor | float], weight: int) -> None:
        """Add a batch's metrics; a NaN value (nothing to measure in this batch) is left out of its mean."""
        for k, v in metrics.items():
            v = float(v)
            if v != v:
                continue
            self.sums[k] = self.sums.get(k, 0.0) + v * weight
            self.weights[k] = self.weights.get(k, 0.0) + weight
        self.n += weight

    def result(self) -> dict[str, float]:
        return {k: v / max(self.weights[k], 1) for k, v in self.sums.items()}
