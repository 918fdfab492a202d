"""What the FD and ID trainers share: the frozen tokenizer, the vision encoder (frozen, or trained by FD), and image
tokens (cached per dataset, or computed per batch)."""
from __future__ import annotations

from pathlib import Path

import torch
from einops import rearrange

from amplify.config import MotionTokenizerConfig
from amplify.loading import load_motion_tokenizer
from amplify.models.motion_tokenizer import MotionTokenizer
from amplify.models.vision import VisionEncoder
from training.config import TrainConfig, VisionSettings, vision_config
from training.data.dataset import AmplifyDataset
from training.loop import Runtime, TrainTask
from training.vision import (
    build_vision_encoder, cached_tokens, calibrate_batchnorm, calibration_images, load_vision, save_vision,
)

VISION_FILE = "vision.safetensors"


def frozen(module: torch.nn.Module) -> torch.nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def load_frozen_mt(path: str) -> tuple[MotionTokenizer, MotionTokenizerConfig]:
    if not path:
        raise ValueError("set mt=<motion tokenizer directory> (e.g. runs/mt/latest)")
    mt, cfg = load_motion_tokenizer(path)
    return frozen(mt), cfg


def caches_tokens(cfg: TrainConfig) -> bool:
    """Image tokens come from the per-dataset cache: ``data.cache_tokens`` and a frozen vision encoder
    (a trained one encodes each batch's images)."""
    vision = getattr(cfg, "vision", None)
    return cfg.data.cache_tokens and (vision is None or vision.frozen)


def dataset_for(cfg: TrainConfig, selection: list[str], mt_cfg: MotionTokenizerConfig,
                action_horizon: int, require_actions: bool = False) -> AmplifyDataset:
    """The dataset for FD/ID training. Images stay at their stored size: the vision encoder resizes
    them exactly as it does when serving."""
    d = cfg.data
    return AmplifyDataset(d.root, selection, mt_cfg.views, mt_cfg.num_tracks, mt_cfg.track_pred_horizon,
                          action_horizon, img_size=mt_cfg.img_shape, interp=d.interp,
                          track_method=d.track_method, frame_stride=d.frame_stride, load_images=not caches_tokens(cfg),
                          require_actions=require_actions)


def vision_encoder(settings: VisionSettings, out: Path, calib_set: AmplifyDataset | None, rt: Runtime) -> VisionEncoder:
    """Load the encoder from ``settings.weights``, or build the seeded random one and calibrate its
    BatchNorm on ``calib_set``; either way write it to ``<out>/vision.safetensors`` (rank 0)."""
    if settings.weights:
        enc = load_vision(settings.weights)
    else:
        enc = build_vision_encoder(vision_config(settings), settings.seed)
        if calib_set is not None:
            calibrate_batchnorm(enc, calibration_images(calib_set, settings.calibration_images // len(calib_set.views)))
    if rt.is_main:
        save_vision(enc, out / VISION_FILE, *([enc.note] if hasattr(enc, "note") else []))
    return frozen(enc)


def token_cache(enc: VisionEncoder, ds: AmplifyDataset, cfg: TrainConfig, rt: Runtime) -> torch.Tensor | None:
    """Cached image tokens of ``ds`` (N, v, P, 512) float16 when ``data.cache_tokens`` (and the encoder is
    frozen); rank 0 computes first."""
    if not caches_tokens(cfg):
        return None
    cache_dir = cfg.cache_dir or str(Path(cfg.data.root) / ".amplify_cache")
    if not rt.is_main:
        rt.barrier()
    tokens = cached_tokens(enc.to("cpu"), ds, cache_dir, progress=cfg.progress and rt.is_main)
    if rt.is_main:
        rt.barrier()
    return tokens


def encode_images(enc: VisionEncoder, images: torch.Tensor) -> torch.Tensor:
    """Images (b, v, S, S, 3) uint8 -> tokens (b, v, P, 512), all views in one batch (with gradients when
    the encoder's weights need them)."""
    x = rearrange(images, "b v h w c -> (b v) h w c").float() / 255.0
    return rearrange(enc(x), "(b v) p d -> b v p d", b=images.shape[0])


def batch_image_tokens(batch: dict[str, torch.Tensor], cache: torch.Tensor | None, enc: VisionEncoder,
                       device: torch.device) -> torch.Tensor:
    """Image tokens of a batch (b, v, P, 512) float32: from the cache by sample index, else encoded now."""
    if cache is not None:
        return cache[batch["index"].cpu()].to(device, torch.float32)
    with torch.no_grad():
        return encode_images(enc.to(device), batch["images"].to(device))


class ImageTokenTask(TrainTask):
    """A task whose batches get image tokens from the frozen encoder's cache (FD and ID).

    Subclasses set ``encoder``, ``train_tokens`` and ``val_tokens``.
    """

    def _prepare(self, batch, rt: Runtime, tokens) -> dict[str, torch.Tensor]:
        out = {k: v.to(rt.device) for k, v in batch.items() if k != "images"}
        out["img_tokens"] = batch_image_tokens(batch, tokens, self.encoder, rt.device)
        return out

    def prepare(self, batch, rt: Runtime):
        return self._prepare(batch, rt, self.train_tokens)
