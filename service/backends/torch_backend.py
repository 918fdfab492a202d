"""The PyTorch back end: the eager ``AMPLIFY`` bundle (its FD prediction is KV-cached)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from amplify.devices import warn_if_emulated
from amplify.inference import precision_name
from amplify.info import ModelInfo
from amplify.loading import load_servable
from amplify.policy import AMPLIFY
from service.backends.base import Backend


class TorchBackend(Backend):
    """Serves an :class:`AMPLIFY` bundle with PyTorch."""

    name = "torch"

    def __init__(self, model: AMPLIFY, meta: dict[str, Any], device: str = "cpu", precision: str = "fp32"):
        self.info = ModelInfo.from_config(model.cfg, model.instructions)
        self.precision = precision_name(precision)
        warn_if_emulated(self.precision, device)
        # fp32: same numbers, faster; bf16: opt-in bfloat16 (amplify/inference.py)
        self.model = model.prepare_for_inference(self.precision)
        self.device = device
        self._meta = meta
        c = model.cfg.inverse_dynamics
        self.id_inputs = tuple(name for name, used in (
            ("images", c.cond_on_img), ("text_emb", c.cond_on_text), ("proprio", c.cond_on_proprio), ("codes", True),
        ) if used)

    @classmethod
    def load(cls, path: str | Path | None, device: str = "cpu", threads: int | None = None, seed: int = 0,
             precision: str = "fp32") -> "TorchBackend":
        """A bundle from ``path`` (amplify.pt or a project directory); None: the default bundle if it
        exists, else an untrained ``small`` bundle made with ``seed`` (:func:`amplify.loading.load_servable`).
        ``precision``: fp32, bf16 or bf16-all."""
        if threads:
            torch.set_num_threads(threads)
        loaded = load_servable(path, device=device, seed=seed)
        return cls(loaded.model, loaded.describe(), device, precision)

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
        actions, indices = self.model.act(self._t(images), self._t(proprio), text_emb=self._t(text_emb),
                                          ar_sampling=sampling, generator=self._generator(seed), return_indices=True)
        return {"actions": self._np(actions), "indices": self._np(indices).astype(np.int64)}

    @torch.inference_mode()
    def inverse_dynamics(self, codes, images=None, text_emb=None, proprio=None):
        m = self.model
        tokens = None
        if images is not None and "images" in self.id_inputs:
            tokens = m.image_tokens(self._t(images))  # (b, v, p, d)
            b, v, p, d = tokens.shape
            tokens = tokens.permute(0, 2, 1, 3).reshape(b, p, v * d)  # (b, p, v*d), as AMPLIFY.act feeds ID
        actions = m.inverse_dynamics(
            img_tokens=tokens, codes=self._t(codes),
            text_emb=self._t(text_emb) if text_emb is not None and "text_emb" in self.id_inputs else None,
            proprio=self._t(proprio) if proprio is not None and "proprio" in self.id_inputs else None)
        return {"actions": self._np(actions)}
