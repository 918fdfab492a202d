"""Forward-dynamics trainer: targets are a frozen tokenizer's indices of the true velocities;
teacher-forced cross entropy; validation also predicts autoregressively (token accuracy, and the
decoded tracks' error). The vision encoder is frozen (tokens cached), or with ``vision.frozen=false``
trained with FD's loss at ``vision.lr_scale`` times its learning rate (the original's switch and
multiplier), its BatchNorm statistics kept; the trained trunk is written to ``<out>/vision.safetensors``."""
from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from einops import rearrange

from amplify.models.forward_dynamics import ForwardDynamics
from amplify.models.motion_tokenizer import MotionTokenizer
from amplify.tracks import points_to_velocities, velocities_to_points
from training.config import FDTrainConfig
from training.loop import Runtime, TrainTask
from training.metrics import MetricAverager, motion_metrics, per_view_codebook_usage, track_metrics
from training.trainers.common import (
    VISION_FILE, ImageTokenTask, dataset_for, encode_images, load_frozen_mt, token_cache, vision_encoder,
)
from training.vision import load_vision, save_vision


class FDLoss(nn.Module):
    """batch (with ``img_tokens`` (b, v, P, 512), or ``images`` (b, v, S, S, 3) uint8 for a trained
    ``encoder``) -> (cross entropy, metrics)."""

    def __init__(self, fd: ForwardDynamics, mt: MotionTokenizer, encoder: nn.Module | None = None):
        super().__init__()
        self.fd = fd
        self.mt = mt  # frozen; its quantizer is shared with fd
        self.encoder = encoder  # trained with fd (vision.frozen=false), else None: tokens come with the batch

    def train(self, mode: bool = True) -> FDLoss:
        super().train(mode)
        if self.encoder is not None:
            self.encoder.eval()  # BatchNorm keeps its statistics; only the weights train
        return self

    def image_tokens(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(b, v, P, 512): the batch's cached or precomputed tokens, else the trained encoder's of its images."""
        return batch["img_tokens"] if "img_tokens" in batch else encode_images(self.encoder, batch["images"])

    def targets(self, tracks: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.mt.tokenize(points_to_velocities(tracks, time_dim=2))[1]  # (b, S)

    def cond(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fd.get_cond_tokens(rearrange(self.image_tokens(batch), "b v p d -> b (v p) d"), batch["text_emb"])

    def forward(self, batch: dict[str, torch.Tensor]):
        target = self.targets(batch["tracks"])
        loss, logits = self.fd.loss(self.cond(batch), target)
        return loss, {"token_acc_teacher_forced": (logits.argmax(-1) == target).float().mean().detach()}


class FDTask(ImageTokenTask):
    name = "fd"

    def __init__(self, cfg: FDTrainConfig):
        self.cfg = cfg

    def setup(self, rt: Runtime) -> None:
        cfg = self.cfg
        self.mt, mt_cfg = load_frozen_mt(cfg.mt)
        self.train_set = dataset_for(cfg, cfg.data.train, mt_cfg, 1)
        self.val_set = dataset_for(cfg, cfg.data.val, mt_cfg, 1) if cfg.data.val else None
        self.encoder = vision_encoder(cfg.vision, Path(cfg.out), self.train_set, rt)
        self.train_tokens = token_cache(self.encoder, self.train_set, cfg, rt)
        self.val_tokens = token_cache(self.encoder, self.val_set, cfg, rt) if self.val_set is not None else None
        p = self.encoder.cfg.num_tokens  # image tokens per view (patches, then any keypoint tokens)
        model_cfg = dataclasses.replace(
            cfg.model, hidden_dim=mt_cfg.hidden_dim, codebook_size=mt_cfg.codebook_size, pred_seq_len=mt_cfg.seq_len,
            num_views=mt_cfg.num_views, img_tokens_per_view=p, img_embed_dim=self.encoder.cfg.embed_dim,
            text_embed_dim=int(self.train_set.tasks[0].text_emb.shape[0]))
        self.cfg.model = model_cfg
        self.fd = ForwardDynamics(model_cfg, quantize=self.mt.quantize)
        trained = None
        if not cfg.vision.frozen:
            trained = self.encoder.requires_grad_(True)
        self.loss_module = FDLoss(self.fd, self.mt, trained)

    def lr_scales(self) -> dict[nn.Parameter, float]:
        enc = self.loss_module.encoder
        return {} if enc is None else {p: self.cfg.vision.lr_scale for p in enc.parameters()}

    def prepare(self, batch, rt: Runtime) -> dict[str, torch.Tensor]:
        if self.loss_module.encoder is None:
            return super().prepare(batch, rt)
        return TrainTask.prepare(self, batch, rt)  # the batch as it is: images are encoded in the loss, with gradients

    def save(self, path: Path, metadata: dict) -> None:
        super().save(path, metadata)
        if self.loss_module.encoder is not None:  # the trunk as trained so far: in the checkpoint (to resume)
            note = f"trained with the forward dynamics (lr scale {self.cfg.vision.lr_scale:g})"
            for where in (path, Path(self.cfg.out)):  # and where FD's runs keep it for the ID and the bundle
                save_vision(self.encoder, where / VISION_FILE, note)

    @property
    def model(self) -> ForwardDynamics:
        return self.fd

    def load_weights(self, path: Path) -> None:
        from amplify.checkpoints import read_dir
        _, state = read_dir(path)
        self.fd.load_state_dict(state)
        if self.loss_module.encoder is not None and (path / VISION_FILE).is_file():  # a trained trunk resumes too
            self.encoder.load_state_dict(load_vision(path / VISION_FILE).state_dict())

    @torch.no_grad()
    def validate(self, loader, rt: Runtime, max_batches: int) -> dict[str, float]:
        mcfg = self.mt.cfg
        avg = MetricAverager()
        targets = []
        for batch in itertools.islice(loader, max_batches or None):
            batch = self._prepare(batch, rt, self.val_tokens)
            loss, m = self.loss_module(batch)
            metrics = {"loss": loss, **m}
            target = self.loss_module.targets(batch["tracks"])  # (b, S)
            targets.append(target.cpu())
            # baseline: the token of "nothing moves" at every position
            still = self.mt.tokenize(torch.zeros_like(points_to_velocities(batch["tracks"], 2)))[1]
            metrics["nomotion_token_acc"] = (still == target).float().mean()
            if self.cfg.val_ar:
                pred = self.fd.predict(self.loss_module.cond(batch), "argmax")
                right = (pred == target).float()  # (b, S)
                metrics["token_acc"] = right.mean()
                # where the error starts: the first token, and later tokens after an all-correct prefix
                metrics["token_acc_first"] = right[:, 0].mean()
                prefix_ok = torch.cumprod(right, dim=1)[:, :-1]  # (b, S-1): tokens 0..k all right
                if prefix_ok.sum() > 0:
                    metrics["token_acc_after_right_prefix"] = (right[:, 1:] * prefix_ok).sum() / prefix_ok.sum()
                vel, _ = self.mt.decode(self.mt.indices_to_codes(pred))
                metrics.update(track_metrics(vel, batch["tracks"], mcfg.img_shape, prefix="pred_track"))
                metrics.update(motion_metrics(vel, batch["tracks"], mcfg.img_shape, mcfg.views, "pred_track"))
                metrics.update(motion_metrics(torch.zeros_like(vel), batch["tracks"], mcfg.img_shape, mcfg.views,
                                              "nomotion"))
            avg.add(metrics, len(batch["tracks"]))
        out = avg.result()
        if targets:
            t = torch.cat(targets)  # (N, S)
            # baseline: the most frequent validation token of each position (an optimistic constant predictor)
            majority = torch.mode(t, dim=0).values
            out["majority_token_acc"] = float((t == majority).float().mean())
            out.update({f"target_{k}": float(v) for k, v in
                        per_view_codebook_usage(t, mcfg.num_codes, mcfg.views, mcfg.per_view).items()})
        return out

    @torch.no_grad()
    def plot(self, out: Path, epoch: int) -> None:
        from training.plots import plot_tracks
        ds = self.val_set or self.train_set
        tokens = self.val_tokens if self.val_set is not None else self.train_tokens
        idx = np.linspace(0, len(ds) - 1, 2).round().astype(int)
        batch = torch.utils.data.default_collate([ds[int(i)] for i in idx])
        if "images" not in batch:
            batch["images"] = torch.from_numpy(np.stack([ds.images(int(i)) for i in idx]))
        b = self._prepare(batch, type("R", (), {"device": torch.device("cpu")})(), tokens)
        self.fd.eval()
        pred = self.fd.predict(self.loss_module.cond(b), "argmax")
        vel, _ = self.mt.decode(self.mt.indices_to_codes(pred))
        tracks = b["tracks"]
        plot_tracks(batch["images"].numpy(), tracks.numpy(), velocities_to_points(vel, 2, tracks[:, :, :1]).numpy(),
                    self.mt.cfg.views, self.mt.cfg.img_shape, out / "tracks_fd.png",
                    f"forward dynamics: predicted tracks, epoch {epoch}")
