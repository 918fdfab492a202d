"""The model's description, in one place: :class:`ModelInfo`, what a loaded model takes and returns.

Made from a config (:meth:`ModelInfo.from_config`) or from an export manifest
(:meth:`ModelInfo.from_manifest`, which reads the config the manifest carries), and used by the
service's ``/metadata`` and input checks, the export manifest's ``metadata`` section and every back
end. The clients check ``/metadata``, whose keys are these fields' names.

No torch here: servers of exported models read it without the model library.

Shapes: v views, H points per track, t = H - 1, n tracks, S code tokens, h hidden size, R relative
classes, A action horizon, P proprio dim, E text-embedding size.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from amplify.config import BundleConfig, MotionTokenizerConfig, from_dict

# The keys of GET /metadata that describe the model (the service adds name, back end, batching...).
METADATA_FIELDS = ("views", "image_size", "track_horizon", "num_tracks", "code_length", "hidden_dim", "fsq_levels",
                   "codebook_size", "action_horizon", "action_dim", "proprio_dim", "text_embedding_dim")


@dataclass(frozen=True)
class ModelInfo:
    """What a model accepts and returns; requests are validated against it.

    The bundle fields (``action_*``, ``proprio_dim``, ``text_embedding_dim``, ``vision_image_size``,
    ``top_k``) are None for a motion tokenizer alone."""

    views: list[str]
    image_size: list[int]          # [H_img, W_img] the model was trained on (any size is accepted and resized once)
    track_horizon: int             # H
    num_tracks: int                # n
    code_length: int               # S
    hidden_dim: int                # h
    fsq_levels: list[int]
    codebook_size: int
    num_codes: int                 # distinct FSQ codes (product of the levels; may be below codebook_size)
    num_classes: int               # R, relative classes per decoded point (logits' last dim)
    action_horizon: int | None = None     # A
    action_dim: int | None = None
    proprio_dim: int | None = None        # P, the proprioception ID takes (its config's size even when unused)
    uses_proprio: bool = True             # whether ID conditions on proprioception
    text_embedding_dim: int | None = None  # E
    vision_image_size: int | None = None   # the vision encoder's input side (images are resized once to it)
    top_k: int | None = None
    instructions: list[str] = field(default_factory=list)

    @property
    def num_views(self) -> int:
        return len(self.views)

    @property
    def num_steps(self) -> int:
        """t = H - 1 velocities per track."""
        return self.track_horizon - 1

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: BundleConfig | MotionTokenizerConfig, instructions: list[str] | None = None) -> "ModelInfo":
        """A bundle's or a motion tokenizer's description."""
        mt = cfg.motion_tokenizer if isinstance(cfg, BundleConfig) else cfg
        r0, r1 = mt.rel_cls_img_size
        info: dict[str, Any] = dict(
            views=list(mt.views), image_size=list(mt.img_shape), track_horizon=mt.track_pred_horizon,
            num_tracks=mt.num_tracks, code_length=mt.seq_len, hidden_dim=mt.hidden_dim, fsq_levels=list(mt.fsq_levels),
            codebook_size=mt.codebook_size, num_codes=mt.num_codes, num_classes=r0 * r1,
            instructions=list(instructions or []),
        )
        if isinstance(cfg, BundleConfig):
            idc, fd = cfg.inverse_dynamics, cfg.forward_dynamics
            info.update(action_horizon=idc.action_horizon, action_dim=idc.action_dim, proprio_dim=idc.proprio_dim,
                        uses_proprio=idc.cond_on_proprio, text_embedding_dim=fd.text_embed_dim,
                        vision_image_size=cfg.vision.image_size, top_k=fd.top_k)
        return cls(**info)

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> "ModelInfo":
        """The description of an exported model, from the config its ``manifest.json`` carries."""
        config = manifest["config"]
        instructions = list(manifest.get("metadata", {}).get("instructions") or [])
        if set(config) == {"motion_tokenizer"}:
            return cls.from_config(from_dict(MotionTokenizerConfig, config["motion_tokenizer"]), instructions)
        return cls.from_config(from_dict(BundleConfig, config), instructions)

    # -- views -----------------------------------------------------------------------------------
    def as_metadata(self) -> dict[str, Any]:
        """The model's part of GET /metadata (:data:`METADATA_FIELDS`)."""
        return {k: getattr(self, k) for k in METADATA_FIELDS}

    def as_manifest(self) -> dict[str, Any]:
        """The export manifest's ``metadata`` section (docs/exporters.md names each key)."""
        return {
            "views": self.views, "image_size": self.image_size, "track_horizon": self.track_horizon,
            "num_tracks": self.num_tracks, "code_length": self.code_length, "hidden_dim": self.hidden_dim,
            "fsq_levels": self.fsq_levels, "codebook_size": self.codebook_size, "num_codes": self.num_codes,
            "velocity_steps": self.num_steps, "relative_classes": self.num_classes,
            "action_horizon": self.action_horizon, "action_dim": self.action_dim,
            "proprio_dim": self.proprio_dim if self.uses_proprio else None,
            "text_embedding_dim": self.text_embedding_dim, "vision_image_size": self.vision_image_size,
            "top_k": self.top_k, "instructions": self.instructions,
        }
