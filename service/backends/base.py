"""The back-end interface: numpy arrays in, numpy arrays out, batch first; no HTTP here. Every back
end describes its model with the one :class:`amplify.info.ModelInfo`.

Shapes (names from MODEL.md): b batch, v views, H points per track, t = H - 1, n tracks,
S code tokens, h hidden size, A action horizon, E text-embedding size.
"""
from __future__ import annotations

import abc
from typing import Any

import numpy as np

from amplify.info import ModelInfo
from amplify.inputs import integrate_velocities

__all__ = ["Backend", "ModelInfo", "integrate_velocities"]


class Backend(abc.ABC):
    """One loaded model. Every method takes and returns numpy arrays with the batch first.

    ``images`` are float32 (b, v, H_img, W_img, 3) in [0, 1], upright, views in ``info.views`` order;
    ``sampling`` is "argmax" or "topk"; ``seed`` (topk only) seeds a generator for this call alone.
    """

    name: str = "base"
    info: ModelInfo
    device: str = "cpu"
    precision: str = "fp32"  # "bf16" / "bf16-all" when the torch back end runs in bfloat16
    sampling_modes: tuple[str, ...] = ("argmax", "topk")

    @abc.abstractmethod
    def model_metadata(self) -> dict[str, Any]:
        """{"name", "version", "format", "trained", ...}: what model this is."""

    def instruction_table(self) -> tuple[list[str], np.ndarray | None]:
        """Known instructions and their embeddings (k, E); empty when the model holds none."""
        return [], None

    @abc.abstractmethod
    def encode(self, velocities: np.ndarray) -> dict[str, np.ndarray]:
        """Velocities (b, v, t, n, 2) -> {"indices": (b, S) int64, "codes": (b, S, h) float32}."""

    @abc.abstractmethod
    def indices_to_codes(self, indices: np.ndarray) -> np.ndarray:
        """Indices (b, S) int64 -> codes (b, S, h) float32."""

    @abc.abstractmethod
    def decode(self, codes: np.ndarray, return_logits: bool = True) -> dict[str, np.ndarray]:
        """Codes (b, S, h) -> {"velocities": (b, v, t, n, 2), "logits": (b, v*t*n, R)}; a back end may
        leave "logits" out when ``return_logits`` is false."""

    @abc.abstractmethod
    def predict_codes(self, images: np.ndarray, text_emb: np.ndarray, sampling: str = "argmax",
                      seed: int | None = None) -> dict[str, np.ndarray]:
        """Images and text (b, E) -> {"indices": (b, S) int64, "codes": (b, S, h)}."""

    def predict_traj(self, images: np.ndarray, text_emb: np.ndarray, init_points: np.ndarray,
                     sampling: str = "argmax", seed: int | None = None) -> dict[str, np.ndarray]:
        """-> {"tracks": (b, v, H, n, 2)}: predicted codes decoded and integrated from init_points (b, v, n, 2)."""
        codes = self.predict_codes(images, text_emb, sampling, seed)["codes"]
        velocities = self.decode(codes, return_logits=False)["velocities"]
        return {"tracks": integrate_velocities(velocities, init_points)}

    @abc.abstractmethod
    def act(self, images: np.ndarray, proprio: np.ndarray, text_emb: np.ndarray, sampling: str = "argmax",
            seed: int | None = None) -> dict[str, np.ndarray]:
        """Images, proprio (b, P) and text (b, E) -> {"actions": (b, A, action_dim), "indices": (b, S) int64
        (the codes the actions were made from)}."""

    # Inputs the inverse-dynamics model conditions on (``codes`` always), in the exporter's order.
    id_inputs: tuple[str, ...] = ("images", "text_emb", "proprio", "codes")

    @property
    def act_inputs(self) -> tuple[str, ...]:
        """Inputs of the whole policy in the exporter's order: proprio only when the ID conditions on it."""
        return ("images", "text_emb") + (("proprio",) if "proprio" in self.id_inputs else ())

    def inverse_dynamics(self, codes: np.ndarray, images: np.ndarray | None = None, text_emb: np.ndarray | None = None,
                         proprio: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Codes (b, S, h) and the ID's other conditions (``id_inputs``) -> {"actions": (b, A, action_dim)}."""
        raise NotImplementedError(f"the {self.name} back end does not run inverse dynamics alone")

    def close(self) -> None:
        """Release resources (sessions, devices)."""

