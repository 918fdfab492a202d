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

from amplify.checkpoints import (
    CheckpointError, clean_original_state_dict, detect_format, load_original, load_state_into, read_dir, save_dir,
)
from amplify.config import (
    BundleConfig, ConfigError, VisionEncoderConfig, from_dict, from_original_fd, from_original_id,
    from_original_mt, to_dict,
)
from amplify.inference import is_prepared, prepare_for_inference
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
        index = {s: i for i, s in enumerate(self.instructions)}
        missing = [s for s in text if s not in index]
        if missing:
            raise KeyError(f"unknown instruction(s) {missing[:3]}; known: {self.instructions[:5]}...")
        return self.text_table[[index[s] for s in text]]

    # -- inputs ------------------------------------------------------------------------------
    def _tensor(self, x: TensorLike, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
        return t.to(self.device, dtype)

    def _images(self, images: TensorLike) -> torch.Tensor:
        is_uint8 = images.dtype == np.uint8 if isinstance(images, np.ndarray) else images.dtype == torch.uint8
        x = self._tensor(images)
        return x / 255.0 if is_uint8 else x

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
    def prepare_for_inference(self) -> "AMPLIFY":
        """Transposed linear weights and channels-last convolutions for faster inference
        (:mod:`amplify.inference`; same numbers up to rounding), in place. The prepared bundle cannot
        be saved or trained."""
        return prepare_for_inference(self)

    def save(self, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
        """Write the bundle in the project's format (a directory)."""
        if is_prepared(self):
            raise RuntimeError("this bundle was prepared for inference (prepare_for_inference) and cannot be saved; "
                               "save it before preparing, or load it again")
        state = {k: v for k, v in self.state_dict().items() if not k.startswith(_SHARED_PREFIX)}
        meta = {**self.metadata, **(metadata or {}), "instructions": self.instructions}
        extra = {TEXT_TABLE_KEY: self.text_table} if self.instructions else None
        return save_dir(path, "bundle", to_dict(self.cfg), state, meta, extra)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu", vision_weights: str | Path | None = None) -> "AMPLIFY":
        """A bundle from the original ``amplify.pt`` or a project directory.

        ``vision_weights`` replaces the vision encoder's weights (a safetensors file or a state dict
        saved with torch) and is required only where the checkpoint holds none.
        """
        if detect_format(path) == "original":
            model = cls._load_original(Path(path))
        else:
            doc, state = read_dir(path)
            if doc["kind"] != "bundle":
                raise CheckpointError(f"{path}: holds a {doc['kind']}, not a bundle")
            try:
                cfg = from_dict(BundleConfig, doc["config"])
                model = cls(cfg, init=False)
            except (ConfigError, TypeError, ValueError) as e:
                raise CheckpointError(f"{path}: config cannot build the bundle: {e}") from None
            table = state.pop(TEXT_TABLE_KEY, None)
            load_state_into(model, state, str(path), allow_missing=(_SHARED_PREFIX,))
            model.metadata = dict(doc.get("metadata", {}))
            instructions = model.metadata.pop("instructions", [])
            if instructions and table is not None:
                model.set_instructions(instructions, table)
        if vision_weights is not None:
            model.load_vision_weights(vision_weights)
        return model.to(device).eval()

    @classmethod
    def _load_original(cls, path: Path) -> "AMPLIFY":
        data = load_original(path)
        c = data.get("config") or {}
        try:
            mt = from_original_mt(c["motion_tokenizer_cfg"])
            cfg = BundleConfig(
                motion_tokenizer=mt,
                forward_dynamics=from_original_fd(c["forward_dynamics_cfg"], mt),
                inverse_dynamics=from_original_id(c["inverse_dynamics_cfg"], mt),
                vision=VisionEncoderConfig(model_name=(c.get("vision_encoder_cfg") or {}).get("model_name", "resnet18")),
            )
            model = cls(cfg, init=False)
        except (ConfigError, KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: config cannot build the bundle: {e}") from None
        load_state_into(model, clean_original_state_dict(data["model"]), str(path))
        model.metadata = {"source": "original", "original_metadata": data.get("metadata", {})}
        return model

    @classmethod
    def from_parts(
        cls, mt_path: str | Path, fd_path: str | Path, id_path: str | Path,
        vision_weights: str | Path | None = None, random_vision: bool = False, device: str | torch.device = "cpu",
    ) -> "AMPLIFY":
        """Assemble a bundle from standalone checkpoints (either format).

        Standalone files hold no vision-encoder weights: name a local weights file, or pass
        ``random_vision=True`` to keep a random initialization (benchmarks only). Nothing is downloaded.
        """
        from amplify.loading import load_forward_dynamics, load_inverse_dynamics, load_motion_tokenizer

        if vision_weights is None and not random_vision:
            raise CheckpointError(
                "standalone checkpoints hold no vision-encoder weights: pass vision_weights=<local file> "
                "(e.g. an original amplify.pt's img_encoder, exported with 'amplify convert')"
            )
        mt, mt_cfg = load_motion_tokenizer(mt_path)
        fd, fd_cfg = load_forward_dynamics(fd_path, mt_cfg)
        idm, id_cfg = load_inverse_dynamics(id_path, mt_cfg)
        model = cls(BundleConfig(mt_cfg, fd_cfg, id_cfg), init=False)
        model.motion_tokenizer.load_state_dict(mt.state_dict())
        fd_state = {k: v for k, v in fd.state_dict().items() if not k.startswith("quantize.")}
        model.forward_dynamics.load_state_dict(fd_state, strict=False)
        model.inverse_dynamics.load_state_dict(idm.state_dict())
        model.metadata = {"source_checkpoints": {"mt": str(mt_path), "fd": str(fd_path), "id": str(id_path)}}
        if vision_weights is not None:
            model.load_vision_weights(vision_weights)
        return model.to(device).eval()

    def load_vision_weights(self, path: str | Path) -> None:
        """Load ResNet-18 trunk weights from a local file (safetensors, project bundle or torch state dict).

        Keys may be bare (``0.weight``), trunk-prefixed (``model.0.weight``) or bundle-prefixed
        (``img_encoder.model.0.weight``).
        """
        p = Path(path)
        if p.is_dir():
            _, state = read_dir(p)
        elif p.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(p))
        else:
            data = load_original(p) if p.suffix == ".pt" else None
            state = data["model"] if data else {}
        trunk = {}
        for k, v in state.items():
            for prefix in ("img_encoder.model.", "model.", ""):
                if k.startswith(prefix) and k[len(prefix):].split(".")[0].isdigit():
                    trunk[k[len(prefix):]] = v
                    break
        load_state_into(self.img_encoder.model, trunk, str(p))
