"""The bundled AMPLIFY policy: vision encoder + motion tokenizer + forward + inverse dynamics.

Shapes: b batch, v views, images (b, v, H, W, 3) float in [0, 1] (uint8 accepted), upright;
text_emb (b, E); proprio (b, 9); S code tokens; A action horizon.

    images --vision--> tokens (b, v, 49, 512)
    FD(tokens as (b, v*49, 512), text) --> indices (b, S) --FSQ--> codes (b, S, h)
    ID(tokens as (b, 49, v*512), proprio, codes) --> actions (b, A, action_dim)
    MT.decode(codes) --> velocities --integrate from init points--> tracks (b, v, H, n, 2)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
from einops import rearrange

from amplify.checkpoints import INT8_SCALE_SUFFIX, quantize_int8, save_dir, stored_as_int8
from amplify.config import BundleConfig, to_dict
from amplify.inference import is_prepared, prepare_for_inference
from amplify.inputs import instruction_rows, unit_images
from amplify.models.forward_dynamics import ForwardDynamics
from amplify.models.inverse_dynamics import InverseDynamics
from amplify.models.motion_tokenizer import MotionTokenizer
from amplify.models.vision import VisionEncoder
from amplify.tracks import velocities_to_points

TensorLike = torch.Tensor | np.ndarray

# Keys of a bundle's state dict that alias the tokenizer's quantizer (FD shares that module).
_SHARED_PREFIX = "forward_dynamics.quantize."
TEXT_TABLE_KEY = "text_table.embeddings"


class AMPLIFY(nn.Module):
    """The bundled policy; ``act``, ``predict_codes`` and ``predict_traj`` as the original's."""

    def __init__(self, cfg: BundleConfig, init: bool = True):
        super().__init__()
        cfg.check()
        self.cfg = cfg
        self.img_encoder = VisionEncoder(cfg.vision)
        self.motion_tokenizer = MotionTokenizer(cfg.motion_tokenizer, init=init)
        self.forward_dynamics = ForwardDynamics(cfg.forward_dynamics, quantize=self.motion_tokenizer.quantize, init=init)
        self.inverse_dynamics = InverseDynamics(cfg.inverse_dynamics, init=init)
        self.metadata: dict[str, Any] = {}
        # Known instructions and their embeddings, so callers may send text instead of embeddings.
        self.instructions: list[str] = []
        self.register_buffer("text_table", torch.zeros(0, cfg.forward_dynamics.text_embed_dim), persistent=False)

    # -- properties --------------------------------------------------------------------------
    @property
    def views(self) -> list[str]:
        return list(self.cfg.motion_tokenizer.views)

    @property
    def device(self) -> torch.device:
        return self.forward_dynamics.sos_token.device

    def set_instructions(self, instructions: Sequence[str], embeddings: TensorLike) -> None:
        """Store the table of known instructions (n,) and their text embeddings (n, E)."""
        emb = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32).reshape(len(instructions), -1)
        if emb.shape[1] != self.cfg.forward_dynamics.text_embed_dim:
            raise ValueError(f"text embeddings have {emb.shape[1]} dims, the model takes {self.cfg.forward_dynamics.text_embed_dim}")
        self.instructions = list(instructions)
        self.text_table = emb.to(self.device)

    def embed_text(self, text: Sequence[str]) -> torch.Tensor:
        """Instructions -> embeddings (b, E) from the bundle's table; KeyError names unknown ones."""
        return self.text_table[instruction_rows(self.instructions, text)]

    # -- inputs ------------------------------------------------------------------------------
    def _tensor(self, x: TensorLike, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
        return t.to(self.device, dtype)

    def _images(self, images: TensorLike) -> torch.Tensor:
        if isinstance(images, np.ndarray):
            return self._tensor(unit_images(images))
        if images.dtype == torch.uint8:
            return unit_images(images.to(self.device))
        return self._tensor(images)

    def _text(self, text_emb: TensorLike | None, text: Sequence[str] | None) -> torch.Tensor:
        if text_emb is not None:
            return self._tensor(text_emb)
        if text is not None:
            return self.embed_text(text)
        raise ValueError("pass text_emb (b, E) or text (a list of b instructions)")

    # -- the pipeline ------------------------------------------------------------------------
    def image_tokens(self, images: TensorLike) -> torch.Tensor:
        """Images (b, v, H, W, 3) -> patch tokens (b, v, 49, 512); all views in one batch."""
        x = self._images(images)
        b = x.shape[0]
        tokens = self.img_encoder(rearrange(x, "b v h w c -> (b v) h w c"))
        return rearrange(tokens, "(b v) p d -> b v p d", b=b)

    @torch.no_grad()
    def predict_codes(
        self, images: TensorLike, text_emb: TensorLike | None = None, text: Sequence[str] | None = None,
        ar_sampling: str | None = None, generator: torch.Generator | None = None,
        img_tokens: torch.Tensor | None = None, cached: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (indices (b, S) int64, codes (b, S, h))."""
        tokens = self.image_tokens(images) if img_tokens is None else img_tokens
        cond = self.forward_dynamics.get_cond_tokens(rearrange(tokens, "b v p d -> b (v p) d"), self._text(text_emb, text))
        predict = self.forward_dynamics.predict if cached else self.forward_dynamics.predict_uncached
        indices = predict(cond, ar_sampling, generator)
        return indices, self.motion_tokenizer.indices_to_codes(indices)

    @torch.no_grad()
    def predict_traj(
        self, images: TensorLike, init_queries: TensorLike, text_emb: TensorLike | None = None,
        text: Sequence[str] | None = None, ar_sampling: str | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Predicted tracks (b, v, H, n, 2) from initial points (b, v, n, 2) or tracks (b, v, H', n, 2)
        (whose first points are used). Not clamped to [-1, 1]."""
        _, codes = self.predict_codes(images, text_emb, text, ar_sampling, generator)
        velocities = self.motion_tokenizer.decode_velocities(codes)
        init = self._tensor(init_queries)
        init = init[:, :, None] if init.dim() == 4 else init[:, :, :1]
        return velocities_to_points(velocities, time_dim=2, init_points=init)

    @torch.no_grad()
    def act(
        self, images: TensorLike, proprio: TensorLike | None = None, text_emb: TensorLike | None = None,
        text: Sequence[str] | None = None, ar_sampling: str | None = None,
        generator: torch.Generator | None = None, cached: bool = True, return_indices: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Images, proprioception and text -> actions (b, A, action_dim); with ``return_indices``
        (actions, the predicted code indices (b, S) int64)."""
        tokens = self.image_tokens(images)
        text_vec = self._text(text_emb, text)
        indices, codes = self.predict_codes(images, text_vec, ar_sampling=ar_sampling, generator=generator,
                                            img_tokens=tokens, cached=cached)
        actions = self.inverse_dynamics(
            img_tokens=rearrange(tokens, "b v p d -> b p (v d)"),
            text_emb=text_vec,
            proprio=None if proprio is None else self._tensor(proprio),
            codes=codes,
        )
        return (actions, indices) if return_indices else actions

    # -- checkpoints -------------------------------------------------------------------------
    def prepare_for_inference(self, precision: str = "fp32", onednn: bool | None = None) -> "AMPLIFY":
        """Transposed linear weights, channels-last convolutions and the fused FD decoding step for faster
        inference (:mod:`amplify.inference`; same numbers up to rounding), in place. ``precision="bf16"``
        runs FD and ID in bfloat16, the vision encoder in float32 (opt-in; different numbers, see the module). The
        prepared bundle cannot be saved or trained. ``onednn``: CPU products on oneDNN's packed
        weights (None: :func:`amplify.inference.onednn_default`, by dtype and CPU)."""
        return prepare_for_inference(self, precision, onednn)

    def save(self, path: str | Path, metadata: dict[str, Any] | None = None,
             weights_dtype: torch.dtype | None = None, int8_prefixes: tuple[str, ...] = ()) -> Path:
        """Write the bundle in the project's format (a directory). ``weights_dtype`` (e.g. ``torch.float16``)
        stores the modules' floating-point weights in that type; ``int8_prefixes`` stores the convolution
        kernels under those keys as per-channel int8 (``amplify.checkpoints.quantize_int8``). Loading turns
        both back into float32."""
        if is_prepared(self):
            raise RuntimeError("this bundle was prepared for inference (prepare_for_inference) and cannot be saved; "
                               "save it before preparing, or load it again")
        state = {k: v for k, v in self.state_dict().items() if not k.startswith(_SHARED_PREFIX)}
        extra = {TEXT_TABLE_KEY: self.text_table} if self.instructions else {}
        for k in [k for k, v in state.items() if stored_as_int8(k, v, int8_prefixes)]:
            state[k], extra[k + INT8_SCALE_SUFFIX] = quantize_int8(state[k])
        if weights_dtype is not None:
            state = {k: v.to(weights_dtype) if v.is_floating_point() else v for k, v in state.items()}
        meta = {**self.metadata, **(metadata or {}), "instructions": self.instructions}
        return save_dir(path, "bundle", to_dict(self.cfg), state, meta, extra or None)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu", vision_weights: str | Path | None = None) -> "AMPLIFY":
        """A bundle from the original ``amplify.pt`` or a project directory (:func:`amplify.loading.load_bundle`).

        ``vision_weights`` replaces the vision encoder's weights (a safetensors file or a state dict
        saved with torch) and is required only where the checkpoint holds none.
        """
        from amplify.loading import load_bundle  # loading builds AMPLIFY: imported when called

        return load_bundle(path, device, vision_weights)

    @classmethod
    def from_parts(
        cls, mt_path: str | Path, fd_path: str | Path, id_path: str | Path,
        vision_weights: str | Path | None = None, random_vision: bool = False, device: str | torch.device = "cpu",
    ) -> "AMPLIFY":
        """Assemble a bundle from standalone checkpoints (:func:`amplify.loading.assemble_bundle`)."""
        from amplify.loading import assemble_bundle

        return assemble_bundle(mt_path, fd_path, id_path, vision_weights, random_vision, device)

    def load_vision_weights(self, path: str | Path) -> None:
        """Load ResNet-18 trunk weights from a local file (:func:`amplify.loading.load_vision_weights`)."""
        from amplify.loading import load_vision_weights

        load_vision_weights(self, path)
