"""Motion-tokenizer trainer: relative-classification loss with per-view weights (``get_loss``)."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from amplify.models.motion_tokenizer import MotionTokenizer
from amplify.tracks import points_to_velocities
from training.config import MTTrainConfig
from training.data.dataset import AmplifyDataset
from training.loop import Runtime, TrainTask
from training.metrics import (
    MOVING_PX, MetricAverager, codebook_perplexity, fsq_input_metrics, grid_velocities, motion_metrics, per_view_codebook_usage, track_metrics,
)


def mt_dataset(cfg: MTTrainConfig, selection: list[str], load_images: bool = False, action_horizon: int = 1) -> AmplifyDataset:
    m, d = cfg.model, cfg.data
    return AmplifyDataset(d.root, selection, m.views, m.num_tracks, m.track_pred_horizon, action_horizon,
                          img_size=m.img_shape, interp=d.interp, track_method=d.track_method,
                          frame_stride=d.frame_stride, load_images=load_images)


class MTLoss(nn.Module):
    """batch -> (MT loss, metrics)."""

    def __init__(self, mt: MotionTokenizer, fast_decoder: bool = True, moving_weight: float = 0.0,
                 moving_weights: dict[str, float] | None = None):
        super().__init__()
        self.mt = mt
        self.fast_decoder = fast_decoder
        unknown = sorted(set(moving_weights or {}) - set(mt.cfg.views))
        if unknown:
            raise ValueError(f"moving_weights: unknown views {unknown}; the views are {mt.cfg.views}")
        self.view_moving_weights = [float((moving_weights or {}).get(v, moving_weight)) for v in mt.cfg.views]
        self.moving_weight = moving_weight

    def weighted_loss(self, logits: torch.Tensor, tracks: torch.Tensor) -> torch.Tensor:
        """``get_loss`` with each point-step weighted ``1 + moving_weight`` where its true step moves
        more than ``MOVING_PX`` pixels (else 1), ``moving_weight`` per view (``moving_weights``): a
        weighted mean per view, then the views' weights."""
        cfg = self.mt.cfg
        per_point = self.mt.loss_per_point(logits, tracks)  # (b, v, t, n)
        half = torch.as_tensor(cfg.img_shape, dtype=tracks.dtype, device=tracks.device) / 2
        step = (torch.nan_to_num(tracks[:, :, 1:] - tracks[:, :, :-1]) * half).norm(dim=-1)  # (b, v, t, n) px
        moving = (step > MOVING_PX).to(per_point.dtype)
        total = per_point.new_zeros(())
        for i, view in enumerate(cfg.views):
            w = 1.0 + self.view_moving_weights[i] * moving[:, i]
            total = total + cfg.loss_weights.get(view, 1.0) * (per_point[:, i] * w).sum() / w.sum()
        return total

    def forward(self, batch: dict[str, torch.Tensor]):
        tracks = batch["tracks"]  # (b, v, H, n, 2)
        vel = points_to_velocities(tracks, time_dim=2)  # (b, v, t, n, 2)
        codes, indices = self.mt.quantize(self.mt.encode(vel))
        # The separable decoder computes the same logits as the reference (and is differentiable)
        # without materializing the per-point MLP's (b, v, t, n, 3h) input: several times faster.
        recon, logits = self.mt.decode(codes, fast=self.fast_decoder)
        if any(self.view_moving_weights):
            loss = self.weighted_loss(logits, tracks)
        else:
            loss = self.mt.get_loss(recon, logits, vel, tracks)
        metrics = track_metrics(recon, tracks, self.mt.cfg.img_shape)
        metrics.update(codebook_perplexity(indices, self.mt.cfg.num_codes))
        return loss, metrics


@torch.no_grad()
def scale_input_projection(mt: MotionTokenizer, dataset: AmplifyDataset, samples: int = 256) -> float:
    """Data-dependent init of ``encoder_proj``: weights ~ N(0, 1 / (fan_in * var(velocity))), so the
    projected velocities start at unit scale. Per-step velocities are small (a few pixels, ~0.05 in
    normalized units); with the default N(0, 0.02) init they are ~1000x smaller than the position
    embeddings and the FSQ codes start out all alike. Returns the velocity std used."""
    idx = np.linspace(0, len(dataset) - 1, min(samples, len(dataset))).round().astype(int)
    vel = points_to_velocities(torch.stack([dataset[int(i)]["tracks"] for i in idx]), time_dim=2)
    std = float(vel.std().clamp_min(1e-4))
    proj = mt.encoder.encoder_proj
    torch.nn.init.normal_(proj.weight, 0.0, 1.0 / (std * proj.in_features ** 0.5))
    return std


class MTTask(TrainTask):
    name = "mt"

    def __init__(self, cfg: MTTrainConfig):
        self.cfg = cfg

    def setup(self, rt: Runtime) -> None:
        cfg = self.cfg
        self.train_set = mt_dataset(cfg, cfg.data.train)
        self.val_set = mt_dataset(cfg, cfg.data.val) if cfg.data.val else None
        self.mt = MotionTokenizer(cfg.model)
        if cfg.input_init:
            scale_input_projection(self.mt, self.train_set)
        self.loss_module = MTLoss(self.mt, moving_weight=cfg.moving_weight, moving_weights=cfg.moving_weights)

    def lr_scales(self) -> dict[nn.Parameter, float]:
        return {p: self.cfg.quantizer_lr_scale for p in self.mt.quantize.parameters()}

    @property
    def model(self) -> MotionTokenizer:
        return self.mt

    @torch.no_grad()
    def validate(self, loader, rt: Runtime, max_batches: int) -> dict[str, float]:
        cfg = self.mt.cfg
        avg = MetricAverager()
        all_idx = []
        for batch in itertools.islice(loader, max_batches or None):
            batch = self.prepare(batch, rt)
            loss, m = self.loss_module(batch)
            m.pop("codebook_perplexity"), m.pop("codebook_usage")
            tracks = batch["tracks"]
            z = self.mt.encode(points_to_velocities(tracks, 2))
            codes, idx = self.mt.quantize(z)
            idx = idx.long()
            m.update(fsq_input_metrics(self.mt.quantize, z))
            recon = self.mt.decode(codes)[0]
            grid = grid_velocities(tracks, cfg.cls_img_size, cfg.rel_cls_img_size)
            m.update(motion_metrics(recon, tracks, cfg.img_shape, cfg.views, "track", grid))
            m.update(motion_metrics(torch.zeros_like(recon), tracks, cfg.img_shape, cfg.views, "nomotion"))
            m.update({f"nomotion_{k[len('track_'):]}": v for k, v in
                      track_metrics(torch.zeros_like(recon), tracks, cfg.img_shape).items()})
            avg.add({"loss": loss, **m}, len(tracks))
            all_idx.append(idx.cpu())
        out = avg.result()
        idx = torch.cat(all_idx)
        out.update({k: float(v) for k, v in codebook_perplexity(idx, cfg.num_codes).items()})
        out.update({k: float(v) for k, v in per_view_codebook_usage(idx, cfg.num_codes, cfg.views, cfg.per_view).items()})
        return out

    @torch.no_grad()
    def plot(self, out: Path, epoch: int) -> None:
        from training.plots import plot_tracks
        ds = self.val_set or self.train_set
        idx = np.linspace(0, len(ds) - 1, 2).round().astype(int)
        tracks = torch.stack([ds[int(i)]["tracks"] for i in idx])
        self.mt.eval()
        recon, _, _ = self.mt(points_to_velocities(tracks, 2))
        from amplify.tracks import velocities_to_points
        pred = velocities_to_points(recon, 2, tracks[:, :, :1])
        images = np.stack([ds.images(int(i)) for i in idx])
        plot_tracks(images, tracks.numpy(), pred.numpy(), self.mt.cfg.views, self.mt.cfg.img_shape,
                    out / "tracks_mt.png", f"motion tokenizer reconstruction, epoch {epoch}")
