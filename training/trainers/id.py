"""Inverse-dynamics trainer: actions from image tokens, proprioception (and text) and motion codes;
the codes are the frozen tokenizer's codes of the true tracks (``codes=gt``) or a frozen forward
dynamics model's predictions (``codes=fd``). With ``codes=gt`` and ``fd=DIR`` validation also reports
``action_l1_fd_codes``, the ID on the forward dynamics' codes (what it gets when served). Any head in
``ACTION_HEADS`` (gaussian, diffusion, flow)."""
from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from einops import rearrange

from amplify.loading import load_forward_dynamics
from amplify.models.forward_dynamics import ForwardDynamics
from amplify.models.inverse_dynamics import InverseDynamics
from amplify.models.motion_tokenizer import MotionTokenizer
from amplify.tracks import points_to_velocities
from training.config import IDTrainConfig
from training.loop import Runtime
from training.metrics import MetricAverager, action_metrics
from training.trainers.common import (
    ImageTokenTask, dataset_for, frozen, load_frozen_mt, token_cache, vision_encoder,
)


class IDLoss(nn.Module):
    """batch (with ``img_tokens`` (b, v, P, 512)) -> (head loss, metrics)."""

    def __init__(self, idm: InverseDynamics, mt: MotionTokenizer, fd: ForwardDynamics | None):
        super().__init__()
        self.idm, self.mt, self.fd = idm, mt, fd

    @torch.no_grad()
    def codes(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(b, S, h): true-track codes, or the forward dynamics model's predicted codes."""
        if self.fd is None:
            return self.mt.tokenize(points_to_velocities(batch["tracks"], time_dim=2))[0]
        cond = self.fd.get_cond_tokens(rearrange(batch["img_tokens"], "b v p d -> b (v p) d"), batch["text_emb"])
        return self.mt.indices_to_codes(self.fd.predict(cond, "argmax"))

    def inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return dict(img_tokens=rearrange(batch["img_tokens"], "b v p d -> b p (v d)"), text_emb=batch["text_emb"],
                    proprio=batch["proprio"], codes=self.codes(batch))

    def forward(self, batch: dict[str, torch.Tensor]):
        return self.idm.loss(batch["actions"], **self.inputs(batch)), {}


class IDTask(ImageTokenTask):
    name = "id"

    def __init__(self, cfg: IDTrainConfig):
        if not cfg.vision.frozen:
            raise ValueError("vision.frozen=false trains the trunk with the forward dynamics only; the inverse "
                             "dynamics takes FD's trained trunk frozen (vision.weights=<fd run>/vision.safetensors)")
        if cfg.codes not in ("gt", "fd"):
            raise ValueError(f"codes must be 'gt' or 'fd', got {cfg.codes!r}")
        if cfg.codes == "fd" and not cfg.fd:
            raise ValueError("codes=fd needs fd=<forward dynamics directory>")
        self.cfg = cfg

    def setup(self, rt: Runtime) -> None:
        cfg = self.cfg
        self.mt, mt_cfg = load_frozen_mt(cfg.mt)
        horizon = cfg.model.action_horizon
        self.train_set = dataset_for(cfg, cfg.data.train, mt_cfg, horizon, require_actions=True)
        self.val_set = dataset_for(cfg, cfg.data.val, mt_cfg, horizon, require_actions=True) if cfg.data.val else None
        self.encoder = vision_encoder(cfg.vision, Path(cfg.out), self.train_set, rt)
        self.train_tokens = token_cache(self.encoder, self.train_set, cfg, rt)
        self.val_tokens = token_cache(self.encoder, self.val_set, cfg, rt) if self.val_set is not None else None
        fd = None
        if cfg.fd:  # trained on its codes (codes=fd), or only validated on them (codes=gt)
            fd, _ = load_forward_dynamics(cfg.fd)
            fd = frozen(fd)
            fd.quantize = self.mt.quantize
        enc = self.encoder.cfg
        self.cfg.model = dataclasses.replace(
            cfg.model, hidden_dim=mt_cfg.hidden_dim, num_code_tokens=mt_cfg.seq_len,
            num_img_tokens=enc.num_tokens, img_embed_dim=mt_cfg.num_views * enc.embed_dim,
            text_embed_dim=int(self.train_set.tasks[0].text_emb.shape[0]),
            proprio_dim=int(self.train_set.demos[0].proprio.shape[1]))
        self.idm = InverseDynamics(self.cfg.model)
        self.mean_action = torch.from_numpy(
            np.concatenate([d.actions for d in self.train_set.demos]).mean(0)).float()  # (7,)
        self.loss_module = IDLoss(self.idm, self.mt, fd if cfg.codes == "fd" else None)
        self.served_fd = IDLoss(self.idm, self.mt, fd) if cfg.codes == "gt" and fd is not None else None

    @property
    def model(self) -> InverseDynamics:
        return self.idm

    @torch.no_grad()
    def validate(self, loader, rt: Runtime, max_batches: int) -> dict[str, float]:
        avg = MetricAverager()
        for batch in itertools.islice(loader, max_batches or None):
            batch = self._prepare(batch, rt, self.val_tokens)
            inputs = self.loss_module.inputs(batch)
            loss = self.idm.loss(batch["actions"], **inputs)
            pred = self.idm(**inputs)
            m = {"loss": loss, **action_metrics(pred, batch["actions"])}
            # baseline: the training mean action at every step of the chunk
            m["mean_action_l1"] = (batch["actions"] - self.mean_action.to(pred.device)).abs().mean()
            if self.loss_module.fd is not None:  # what perfect forward dynamics would give this ID
                gt = self.mt.tokenize(points_to_velocities(batch["tracks"], time_dim=2))[0]
                m["action_l1_true_codes"] = (self.idm(**{**inputs, "codes": gt}) - batch["actions"]).abs().mean()
            elif self.served_fd is not None:  # trained on true codes: what it does on FD's (as served)
                m["action_l1_fd_codes"] = (self.idm(**self.served_fd.inputs(batch)) - batch["actions"]).abs().mean()
            avg.add(m, len(pred))
        return avg.result()

    @torch.no_grad()
    def plot(self, out: Path, epoch: int) -> None:
        from training.plots import plot_actions
        ds = self.val_set or self.train_set
        tokens = self.val_tokens if self.val_set is not None else self.train_tokens
        i = len(ds) // 2
        batch = torch.utils.data.default_collate([ds[i]])
        if "images" not in batch and tokens is None:
            batch["images"] = torch.from_numpy(ds.images(i))[None]
        b = self._prepare(batch, type("R", (), {"device": torch.device("cpu")})(), tokens)
        self.idm.eval()
        pred = self.idm(**self.loss_module.inputs(b))
        plot_actions(b["actions"][0].numpy(), pred[0].numpy(), out / "actions_id.png",
                     f"inverse dynamics ({self.cfg.model.head}): true (solid) vs predicted (dashed), epoch {epoch}")
