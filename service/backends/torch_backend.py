"""The PyTorch back end: the eager ``AMPLIFY`` bundle (its FD prediction is KV-cached)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from amplify.checkpoints import detect_format, file_sha256
from amplify.defaults import default_bundle_dir
from amplify.policy import AMPLIFY
from amplify.presets import small
from service.backends.base import Backend, ModelInfo

log = logging.getLogger("amplify.service")


def bundle_info(model: AMPLIFY) -> ModelInfo:
    """A bundle's shapes as the service's :class:`ModelInfo`."""
    cfg = model.cfg
    mt, fd, idc = cfg.motion_tokenizer, cfg.forward_dynamics, cfg.inverse_dynamics
    r0, r1 = mt.rel_cls_img_size
    return ModelInfo(
        views=list(mt.views), image_size=list(mt.img_shape), track_horizon=mt.track_pred_horizon,
        num_tracks=mt.num_tracks, code_length=mt.seq_len, hidden_dim=mt.hidden_dim,
        fsq_levels=list(mt.fsq_levels), codebook_size=mt.codebook_size, action_horizon=idc.action_horizon,
        action_dim=idc.action_dim, proprio_dim=idc.proprio_dim, text_embedding_dim=fd.text_embed_dim,
        num_classes=r0 * r1,
    )


def _weights_file(path: Path) -> Path | None:
    if path.is_file():
        return path
    f = path / "model.safetensors"
    return f if f.is_file() else None


class TorchBackend(Backend):
    """Serves an :class:`AMPLIFY` bundle with PyTorch."""

    name = "torch"

    def __init__(self, model: AMPLIFY, meta: dict[str, Any], device: str = "cpu"):
        self.model = model.prepare_for_inference()  # same numbers, faster (amplify/inference.py)
        self.device = device
        self.info = bundle_info(model)
        self._meta = meta

    @classmethod
    def load(cls, path: str | Path | None, device: str = "cpu", threads: int | None = None, seed: int = 0) -> "TorchBackend":
        """A bundle from ``path`` (amplify.pt or a project directory); None: the default bundle if it
        exists, else an untrained ``small`` bundle made with ``seed``."""
        if threads:
            torch.set_num_threads(threads)
        if path is None and default_bundle_dir().is_dir():
            path = default_bundle_dir()
        if path is None:
            log.warning("no model given and no default bundle at %s: serving an UNTRAINED small bundle", default_bundle_dir())
            torch.manual_seed(seed)
            model = AMPLIFY(small()).to(device).eval()
            meta = {"name": "untrained-small", "version": f"seed-{seed}", "format": "random", "trained": False}
            return cls(model, meta, device)
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"model {p} does not exist")
        if p.is_dir() and (p / "manifest.json").is_file():
            raise ValueError(f"{p} is an `amplify export` directory: serve it with --backend torchscript or onnx")
        fmt = detect_format(p)
        model = AMPLIFY.load(p, device=device)
        md = model.metadata
        weights = _weights_file(p)
        name = md.get("name") or (p.parent.name if p.is_file() else p.name)
        version = md.get("version") or (file_sha256(weights)[:12] if weights else "unknown")
        meta = {"name": str(name), "version": str(version), "format": "original" if fmt == "original" else "amplify-dir",
                "trained": bool(md.get("trained", True)), "path": str(p)}
        if isinstance(md.get("evaluation"), dict):  # closed-loop figures recorded by `amplify build-default`
            meta["evaluation"] = md["evaluation"]
        return cls(model, meta, device)

    # -- interface ---------------------------------------------------------------------------
    def model_metadata(self) -> dict[str, Any]:
        return dict(self._meta)

    def instruction_table(self) -> tuple[list[str], np.ndarray | None]:
        if not self.model.instructions:
            return [], None
        return list(self.model.instructions), self.model.text_table.detach().cpu().numpy()

    def _t(self, x: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x)).to(self.device, dtype)

    def _generator(self, seed: int | None) -> torch.Generator | None:
        if seed is None:
            return None
        return torch.Generator(device=self.device).manual_seed(int(seed))

    @staticmethod
    def _np(x: torch.Tensor) -> np.ndarray:
        return x.detach().cpu().numpy()

    @torch.inference_mode()
    def encode(self, velocities: np.ndarray) -> dict[str, np.ndarray]:
        codes, indices = self.model.motion_tokenizer.tokenize(self._t(velocities))
        return {"indices": self._np(indices).astype(np.int64), "codes": self._np(codes).astype(np.float32)}

    @torch.inference_mode()
    def indices_to_codes(self, indices: np.ndarray) -> np.ndarray:
        return self._np(self.model.motion_tokenizer.indices_to_codes(self._t(indices, torch.long))).astype(np.float32)

    @torch.inference_mode()
    def decode(self, codes: np.ndarray, return_logits: bool = True) -> dict[str, np.ndarray]:
        mt = self.model.motion_tokenizer
        if not return_logits:  # chunked separable decoder, no (b, v*t*n, R) logits materialized
            return {"velocities": self._np(mt.decode_velocities(self._t(codes)))}
        velocities, logits = mt.decode(self._t(codes))
        return {"velocities": self._np(velocities), "logits": self._np(logits)}

    @torch.inference_mode()
    def predict_codes(self, images, text_emb, sampling="argmax", seed=None):
        indices, codes = self.model.predict_codes(self._t(images), text_emb=self._t(text_emb), ar_sampling=sampling,
                                                  generator=self._generator(seed))
        return {"indices": self._np(indices).astype(np.int64), "codes": self._np(codes)}

    @torch.inference_mode()
    def predict_traj(self, images, text_emb, init_points, sampling="argmax", seed=None):
        tracks = self.model.predict_traj(self._t(images), self._t(init_points), text_emb=self._t(text_emb),
                                         ar_sampling=sampling, generator=self._generator(seed))
        return {"tracks": self._np(tracks)}

    @torch.inference_mode()
    def act(self, images, proprio, text_emb, sampling="argmax", seed=None):
        actions = self.model.act(self._t(images), self._t(proprio), text_emb=self._t(text_emb), ar_sampling=sampling,
                                 generator=self._generator(seed))
        return {"actions": self._np(actions)}
