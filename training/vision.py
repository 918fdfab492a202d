"""The frozen vision encoder used in training, and the cache of its image tokens.

There are no pretrained ResNet-18 weights offline, so a run without ``vision_weights`` builds a
*seeded random* ResNet-18 trunk and calibrates its BatchNorm running statistics on training images
(one pass in train mode, cumulative averages), so every layer's activations are normalized for this
data. It stays frozen afterwards. The exact weights (BatchNorm buffers included) are written to
``vision.safetensors`` with the encoder config in the file's metadata; ``amplify bundle --vision``
puts that file into the bundle, so serving sees the same features as training.

Image tokens of a dataset are computed once and cached (float16) under ``<cache_dir>``, keyed by the
dataset's signature and the encoder weights' hash.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from amplify.config import VisionEncoderConfig, from_dict, to_dict
from amplify.models.vision import VisionEncoder


def build_vision_encoder(cfg: VisionEncoderConfig, seed: int = 0) -> VisionEncoder:
    """A seeded random ResNet-18 patch encoder (the same seed gives the same weights)."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    enc = VisionEncoder(cfg)
    torch.random.set_rng_state(gen_state)
    return enc.eval()


@torch.no_grad()
def calibrate_batchnorm(enc: VisionEncoder, images: torch.Tensor, batch: int = 64) -> None:
    """Set every BatchNorm's running mean/var to this data's statistics (images (N, H, W, 3) in [0, 1])."""
    bns = [m for m in enc.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    enc.model.train()
    for i in range(0, len(images), batch):
        enc.model(_resize(enc, images[i:i + batch]))
    for m in bns:
        m.momentum = 0.1
    enc.eval()


def _resize(enc: VisionEncoder, images: torch.Tensor) -> torch.Tensor:
    x = images.permute(0, 3, 1, 2)
    s = enc.cfg.image_size
    if x.shape[-2:] != (s, s):
        x = torch.nn.functional.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=False)
    return x


RANDOM_NOTE = "seeded random ResNet-18 with BatchNorm calibrated on the training images, frozen (see docs/training.md)"


def save_vision(enc: VisionEncoder, path: str | Path, note: str = RANDOM_NOTE) -> Path:
    """Write the trunk's weights and buffers (keys ``model.<i>...``), the config and ``note`` (how the
    weights were made) as metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in enc.state_dict().items()}  # model.<i>... (+ keypoint_*)
    save_file(state, str(path), metadata={"config": json.dumps(to_dict(enc.cfg)), "kind": "vision_encoder",
                                          "note": note})
    return path


def load_vision(path: str | Path) -> VisionEncoder:
    """A vision encoder written by :func:`save_vision` (its config from the file's metadata)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"vision weights not found: {path}")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    cfg = from_dict(VisionEncoderConfig, json.loads(meta["config"])) if "config" in meta else VisionEncoderConfig()
    enc = VisionEncoder(cfg)
    state = load_file(str(path))
    enc.load_state_dict({k: v for k, v in state.items() if not k.startswith("state_head.")})
    enc.note = meta.get("note", RANDOM_NOTE)  # how the weights were made
    return enc.eval()


def vision_hash(enc: VisionEncoder) -> str:
    h = hashlib.sha256(json.dumps(to_dict(enc.cfg), sort_keys=True).encode())
    # the trunk's keys alone unless there are keypoint weights: existing token caches keep their names
    for k, v in (enc.model.state_dict() if not enc.cfg.keypoints else enc.state_dict()).items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def compute_tokens(enc: VisionEncoder, dataset, batch: int = 64, progress: bool = True) -> torch.Tensor:
    """Image tokens of every sample of ``dataset`` (an AmplifyDataset): (N, v, P, 512) float16."""
    out = []
    n = len(dataset)
    for i in tqdm(range(0, n, batch), desc="image tokens", disable=not progress, leave=False):
        imgs = np.stack([dataset.images(j) for j in range(i, min(n, i + batch))])  # (b, v, S, S, 3)
        b, v = imgs.shape[:2]
        x = torch.from_numpy(imgs).reshape(b * v, *imgs.shape[2:]).float() / 255.0
        out.append(enc(x).reshape(b, v, -1, enc.cfg.embed_dim).to(torch.float16))
    return torch.cat(out)


def cached_tokens(enc: VisionEncoder, dataset, cache_dir: str | Path, progress: bool = True) -> torch.Tensor:
    """:func:`compute_tokens`, read from / written to ``cache_dir`` keyed by dataset and weights."""
    path = Path(cache_dir) / f"tokens-{dataset.signature()}-{vision_hash(enc)}.safetensors"
    if path.is_file():
        return load_file(str(path))["tokens"]
    tokens = compute_tokens(enc, dataset, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"tokens": tokens.contiguous()}, str(tmp))
    tmp.replace(path)
    return tokens


def calibration_images(dataset, count: int = 256, seed: int = 0) -> torch.Tensor:
    """``count`` images (all views) drawn evenly from ``dataset``: (count*v, S, S, 3) float in [0, 1]."""
    idx = np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int)
    imgs = np.stack([dataset.images(int(i)) for i in idx])
    return torch.from_numpy(imgs).reshape(-1, *imgs.shape[2:]).float() / 255.0
