"""The PyTorch back end: the eager ``AMPLIFY`` bundle (its FD prediction is KV-cached)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from amplify.info import ModelInfo
from amplify.loading import load_servable
from amplify.policy import AMPLIFY
from service.backends.base import Backend


class TorchBackend(Backend):
    """Serves an :class:`AMPLIFY` bundle with PyTorch."""

    name = "torch"

    def __init__(self, model: AMPLIFY, meta: dict[str, Any], device: str = "cpu"):
        self.info = ModelInfo.from_config(model.cfg, model.instructions)
        self.model = model.prepare_for_inference()  # same numbers, faster (amplify/inference.py)
        self.device = device
        self._meta = meta

    @classmethod
    def load(cls, path: str | Path | None, device: str = "cpu", threads: int | None = None, seed: int = 0) -> "TorchBackend":
        """A bundle from ``path`` (amplify.pt or a project directory); None: the default bundle if it
        exists, else an untrained ``small`` bundle made with ``seed`` (:func:`amplify.loading.load_servable`)."""
        if threads:
            torch.set_num_threads(threads)
        loaded = load_servable(path, device=device, seed=seed)
        meta = loaded.describe()
        if isinstance(loaded.metadata.get("evaluation"), dict):  # closed-loop figures recorded by `amplify build-default`
            meta["evaluation"] = loaded.metadata["evaluation"]
        return cls(loaded.model, meta, device)

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
