"""Typed model configurations, their JSON form, and ``key=value`` overrides.

Each model has a dataclass holding exactly what builds it. ``from_original_*`` functions read the
config dicts stored in the original research code's checkpoints.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Sequence

# FSQ levels for each supported codebook size (the product of the levels may be smaller than the
# size: 2048 gives 8*8*6*5 = 1920 codes, with 2048 FD logits; larger indices wrap onto codes).
FSQ_LEVELS: dict[int, list[int]] = {
    16: [5, 3],
    64: [8, 8],
    256: [8, 6, 5],
    512: [8, 8, 8],
    1024: [8, 5, 5, 5],
    2048: [8, 8, 6, 5],
    4096: [7, 5, 5, 5, 5],
}


class ConfigError(ValueError):
    """A configuration that cannot build a model."""


def fsq_levels(codebook_size: int) -> list[int]:
    """FSQ levels for ``codebook_size``; a clear error for sizes outside the table."""
    try:
        return list(FSQ_LEVELS[int(codebook_size)])
    except KeyError:
        raise ConfigError(
            f"codebook_size {codebook_size} is not supported; choose one of {sorted(FSQ_LEVELS)}"
        ) from None


@dataclass
class VisionEncoderConfig:
    """ResNet-18 patch encoder: images resized to ``image_size`` -> (b, 49, 512) patch tokens."""

    model_name: str = "resnet18"
    image_size: int = 224
    num_tokens: int = 49  # tokens per image: the patches, then the keypoint tokens
    embed_dim: int = 512
    # Opt-in (not in the original; 0 keeps original checkpoints' numbers): per residual stage in
    # ``keypoint_levels``, ``keypoints`` maps whose soft-argmax (x, y) become one token each after the
    # patches (amplify/models/vision.py); a pretraining can fit them to where the objects are.
    keypoints: int = 0
    keypoint_levels: list[int] = field(default_factory=lambda: [1, 2])

    def __post_init__(self) -> None:
        if self.model_name != "resnet18":
            raise ConfigError(f"vision encoder {self.model_name!r} is not supported; only 'resnet18'")
        if self.keypoints:
            if not self.keypoint_levels or any(level not in (1, 2, 3) for level in self.keypoint_levels):
                raise ConfigError(f"keypoint_levels must be among [1, 2, 3], got {self.keypoint_levels}")
            if self.num_tokens != self.patch_tokens + self.keypoints * len(self.keypoint_levels):
                raise ConfigError(f"num_tokens {self.num_tokens} != {self.patch_tokens} patches + "
                                  f"{self.keypoints} keypoints x {len(self.keypoint_levels)} levels")

    @property
    def patch_tokens(self) -> int:
        """Patch tokens per image: ResNet-18's final map is image_size / 32 square."""
        return (self.image_size // 32) ** 2


@dataclass
class MotionTokenizerConfig:
    """Motion tokenizer: tracks (b, v, H, n, 2) <-> FSQ tokens (b, S, h)."""

    views: list[str] = field(default_factory=lambda: ["agentview", "eye_in_hand"])
    img_shape: list[int] = field(default_factory=lambda: [128, 128])
    true_horizon: int = 16
    track_pred_horizon: int = 16
    num_tracks: int = 400
    point_dim: int = 2
    hidden_dim: int = 768
    num_heads: int = 8
    num_layers: int = 2
    dropout: float = 0.1
    bias: bool = False
    codebook_size: int = 2048
    causal_encoder: bool | str = True  # True: causal, 'diag', False: full
    decoder_mlp_hidden_dim: int = 256
    cond_on_img: bool = False
    per_view: bool = False
    cls_img_size: list[int] = field(default_factory=lambda: [128, 128])
    rel_cls_img_size: list[int] = field(default_factory=lambda: [15, 15])
    loss_weights: dict[str, float] = field(default_factory=lambda: {"agentview": 0.9, "eye_in_hand": 0.1})
    vision: VisionEncoderConfig = field(default_factory=VisionEncoderConfig)
    # Opt-in (not in the original; False keeps original checkpoints' numbers): layer-normalize the
    # encoder's latents (no affine) before FSQ, so the quantizer's input cannot grow until every code
    # sits at an extreme level (tanh saturation).
    fsq_input_norm: bool = False
    # Opt-in (not in the original; 0 keeps original checkpoints' numbers): > 0 standardizes each FSQ
    # input dimension (the quantizer's ``project_in`` output) with batch statistics while training and
    # running statistics after, scaled to this std, so the straight-through gradient cannot push the
    # inputs out into tanh saturation (every code at an extreme level).
    fsq_input_std: float = 0.0

    def __post_init__(self) -> None:
        fsq_levels(self.codebook_size)
        if self.fsq_input_std < 0:
            raise ConfigError(f"fsq_input_std must be >= 0 (0: off), got {self.fsq_input_std}")
        if self.causal_encoder not in (True, False, "diag"):
            raise ConfigError(f"causal_encoder must be true, false or 'diag', got {self.causal_encoder!r}")
        if self.hidden_dim % self.num_heads:
            raise ConfigError(f"hidden_dim {self.hidden_dim} is not divisible by num_heads {self.num_heads}")

    @property
    def num_views(self) -> int:
        return len(self.views)

    @property
    def num_steps(self) -> int:
        """t: velocities per track (track_pred_horizon - 1)."""
        return self.track_pred_horizon - 1

    @property
    def seq_len(self) -> int:
        """S: tokens per sample (t, or v*t when per_view)."""
        return self.num_views * self.num_steps if self.per_view else self.num_steps

    @property
    def fsq_levels(self) -> list[int]:
        return fsq_levels(self.codebook_size)

    @property
    def num_codes(self) -> int:
        """Distinct FSQ codes (product of the levels; may be below codebook_size)."""
        n = 1
        for level in self.fsq_levels:
            n *= level
        return n


@dataclass
class ForwardDynamicsConfig:
    """Forward dynamics: image + text condition tokens -> S code indices, autoregressively."""

    hidden_dim: int = 768
    num_heads: int = 8
    num_layers: int = 8
    dropout: float = 0.1
    bias: bool = False
    codebook_size: int = 2048
    pred_seq_len: int = 15  # S, the motion tokenizer's token count
    num_views: int = 2
    img_tokens_per_view: int = 49
    img_embed_dim: int = 512
    text_embed_dim: int = 512
    sampling: str = "argmax"  # argmax | topk
    top_k: int = 10
    # Original checkpoints keep all codebook_size logits (indices past the FSQ code count wrap);
    # models trained by this project may mask the unused ones.
    mask_unused_logits: bool = False
    # The text embedding is multiplied by this before text_proj. A unit-norm embedding of E=512 has
    # components of ~0.04, so its token starts ~20x weaker than the image tokens and, under Adam, its
    # projection learns ~20x slower; sqrt(E) gives it unit-variance components (measured on the built-in
    # world: no gain, docs/training.md "A stronger text token"). 1.0: as the original.
    text_scale: float = 1.0
    # Text-selected image tokens (not in the original; 0 = off, as every original checkpoint): that many
    # extra condition tokens, each a softmax-weighted sum of the projected image tokens whose weights come
    # from the instruction alone (a linear map from the text embedding to one logit per image-token
    # position, zero at init: the plain mean), so the instruction can pick which object's tokens the motion
    # follows (docs/training.md "The instruction picks the object": 43 -> 102 of 110 held-out episodes with
    # text_select=4 text_select_last=8 on keypoint tokens).
    text_select: int = 0
    # With text_select: choose only among the last that many image tokens of each view (0: all of them).
    # An encoder with keypoint tokens ends each view with them (amplify/models/vision.py), so its K * levels
    # keypoints make the instruction pick an object's position, not a patch.
    text_select_last: int = 0

    def __post_init__(self) -> None:
        fsq_levels(self.codebook_size)
        if self.sampling not in ("argmax", "topk"):
            raise ConfigError(f"sampling must be 'argmax' or 'topk', got {self.sampling!r}")
        if self.text_select < 0:
            raise ConfigError(f"text_select must be >= 0, got {self.text_select}")
        if not 0 <= self.text_select_last <= self.img_tokens_per_view:
            raise ConfigError(f"text_select_last must be in 0..img_tokens_per_view ({self.img_tokens_per_view}), "
                              f"got {self.text_select_last}")

    @property
    def select_candidates(self) -> int:
        """How many image tokens of each view ``text_select`` chooses among."""
        return self.text_select_last or self.img_tokens_per_view

    @property
    def cond_seq_len(self) -> int:
        """C: image tokens of all views + one text token + ``text_select`` selected tokens."""
        return self.num_views * self.img_tokens_per_view + 1 + self.text_select

    @property
    def seq_len(self) -> int:
        return self.cond_seq_len + self.pred_seq_len


@dataclass
class InverseDynamicsConfig:
    """Inverse dynamics: (image, text, proprio, codes) condition -> an action chunk (b, A, action_dim)."""

    head: str = "gaussian"  # gaussian | diffusion | flow
    hidden_dim: int = 768
    num_heads: int = 8
    num_layers: int = 4
    dropout: float = 0.1
    bias: bool = False
    action_dim: int = 7
    action_horizon: int = 16
    action_squash: bool = True
    action_squash_scale: float = 1.0
    std: float = 0.1
    action_loss_discount: float = 0.99
    cond_on_img: bool = True
    cond_on_text: bool = False
    cond_on_proprio: bool = True
    cond_on_tracks: bool = True
    proprio_dim: int = 9
    num_img_tokens: int = 49
    img_embed_dim: int = 1024  # views * 512, image tokens stacked in features
    text_embed_dim: int = 512
    num_code_tokens: int = 15
    diffusion_steps: int = 100  # diffusion head: training noise levels (DDPM, cosine schedule)
    flow_matching_steps: int = 100  # flow head: Euler steps when sampling
    diffusion_sample_steps: int = 10  # diffusion head: DDIM (deterministic) steps when sampling
    sample_noise: str = "zero"  # diffusion/flow sampling start: zero | seeded (sample_seed) | random
    sample_seed: int = 0

    def __post_init__(self) -> None:
        if self.head not in ("gaussian", "diffusion", "flow"):
            raise ConfigError(f"head must be gaussian, diffusion or flow, got {self.head!r}")
        if self.sample_noise not in ("zero", "seeded", "random"):
            raise ConfigError(f"sample_noise must be zero, seeded or random, got {self.sample_noise!r}")
        if not 1 <= self.diffusion_sample_steps <= self.diffusion_steps:
            raise ConfigError(f"diffusion_sample_steps must be in [1, diffusion_steps={self.diffusion_steps}]")

    @property
    def cond_seq_len(self) -> int:
        return (
            self.num_img_tokens * self.cond_on_img
            + self.cond_on_text
            + self.cond_on_proprio
            + self.num_code_tokens * self.cond_on_tracks
        )


@dataclass
class BundleConfig:
    """The bundled policy: vision encoder + motion tokenizer + forward + inverse dynamics."""

    motion_tokenizer: MotionTokenizerConfig = field(default_factory=MotionTokenizerConfig)
    forward_dynamics: ForwardDynamicsConfig = field(default_factory=ForwardDynamicsConfig)
    inverse_dynamics: InverseDynamicsConfig = field(default_factory=InverseDynamicsConfig)
    vision: VisionEncoderConfig = field(default_factory=VisionEncoderConfig)

    def check(self) -> None:
        """Raise ConfigError when the parts do not fit together."""
        mt, fd, idc = self.motion_tokenizer, self.forward_dynamics, self.inverse_dynamics
        problems = []
        if fd.hidden_dim != mt.hidden_dim:
            problems.append(f"forward_dynamics.hidden_dim {fd.hidden_dim} != motion_tokenizer.hidden_dim {mt.hidden_dim}")
        if fd.codebook_size != mt.codebook_size:
            problems.append(f"forward_dynamics.codebook_size {fd.codebook_size} != motion_tokenizer.codebook_size {mt.codebook_size}")
        if fd.pred_seq_len != mt.seq_len:
            problems.append(f"forward_dynamics.pred_seq_len {fd.pred_seq_len} != motion tokenizer tokens {mt.seq_len}")
        if fd.num_views != mt.num_views:
            problems.append(f"forward_dynamics.num_views {fd.num_views} != {mt.num_views} views")
        if idc.cond_on_tracks and idc.hidden_dim != mt.hidden_dim:
            problems.append(f"inverse_dynamics.hidden_dim {idc.hidden_dim} != motion_tokenizer.hidden_dim {mt.hidden_dim}")
        if idc.cond_on_tracks and idc.num_code_tokens != mt.seq_len:
            problems.append(f"inverse_dynamics.num_code_tokens {idc.num_code_tokens} != {mt.seq_len}")
        if idc.cond_on_img and idc.img_embed_dim != mt.num_views * self.vision.embed_dim:
            problems.append(f"inverse_dynamics.img_embed_dim {idc.img_embed_dim} != views*{self.vision.embed_dim}")
        if self.vision.keypoints and fd.img_tokens_per_view != self.vision.num_tokens:
            problems.append(f"forward_dynamics.img_tokens_per_view {fd.img_tokens_per_view} != vision.num_tokens {self.vision.num_tokens}")
        if self.vision.keypoints and idc.cond_on_img and idc.num_img_tokens != self.vision.num_tokens:
            problems.append(f"inverse_dynamics.num_img_tokens {idc.num_img_tokens} != vision.num_tokens {self.vision.num_tokens}")
        if problems:
            raise ConfigError("bundle parts do not fit: " + "; ".join(problems))


# ---------------------------------------------------------------------------------------------
# dict <-> dataclass, overrides
# ---------------------------------------------------------------------------------------------
def to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass config as a JSON-ready dict."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build dataclass ``cls`` from a dict, recursing into nested dataclasses; unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    kwargs = {}
    for key, value in data.items():
        t = hints[key]
        if dataclasses.is_dataclass(t) and isinstance(value, dict):
            value = from_dict(t, value)
        kwargs[key] = value
    return cls(**kwargs)


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        low = text.lower()
        if low in ("true", "false"):
            return low == "true"
        if low in ("none", "null"):
            return None
        return text


def apply_overrides(cfg: Any, overrides: Sequence[str]) -> Any:
    """Apply ``a.b=value`` overrides (values parsed as JSON, else as strings) to a dataclass config.

    Returns a new config; unknown keys raise ConfigError naming the key.
    """
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"unknown config key {key!r}")
            node = node[p]
        if parts[-1] not in node:
            raise ConfigError(f"unknown config key {key!r}")
        node[parts[-1]] = _parse_value(raw.strip())
    return from_dict(type(cfg), data)


# ---------------------------------------------------------------------------------------------
# the original research code's configs
# ---------------------------------------------------------------------------------------------
def from_original_mt(c: dict[str, Any]) -> MotionTokenizerConfig:
    """MotionTokenizerConfig from an original ``mt.pt`` config dict."""
    loss = c.get("loss", {}) or {}
    views = list(c.get("cond_cameraviews", ["agentview", "eye_in_hand"]))
    weights = loss.get("loss_weights", {}) or {}
    return MotionTokenizerConfig(
        views=views,
        img_shape=list(c.get("img_shape", [128, 128])),
        true_horizon=int(c["true_horizon"]),
        track_pred_horizon=int(c["track_pred_horizon"]),
        num_tracks=int(c["num_tracks"]),
        point_dim=int(c.get("point_dim", 2)),
        hidden_dim=int(c["hidden_dim"]),
        num_heads=int(c["num_heads"]),
        num_layers=int(c["num_layers"]),
        dropout=float(c.get("attn_pdrop", 0.1)),
        codebook_size=int(c["codebook_size"]),
        causal_encoder=c.get("causal_encoder", True),
        decoder_mlp_hidden_dim=int(c.get("decoder_mlp_hidden_dim", 256)),
        cond_on_img=bool(c.get("cond_on_img", False)),
        per_view=bool(c.get("per_view", False)),
        cls_img_size=list(loss.get("cls_img_size", c.get("img_shape", [128, 128]))),
        rel_cls_img_size=list(loss.get("rel_cls_img_size", [15, 15])),
        loss_weights={v: float(weights.get(v, 1.0)) for v in views},
    )


def from_original_fd(c: dict[str, Any], mt: MotionTokenizerConfig) -> ForwardDynamicsConfig:
    """ForwardDynamicsConfig from an original ``fd.pt`` config dict and its tokenizer's config."""
    fdc = c.get("forward_dynamics", c)
    tr = fdc.get("transformer", {})
    if fdc.get("cond_on_proprio") or fdc.get("modality_emb") or fdc.get("cross_attend_cond"):
        raise ConfigError(
            "forward dynamics with cond_on_proprio, modality_emb or cross_attend_cond is not supported"
        )
    return ForwardDynamicsConfig(
        hidden_dim=mt.hidden_dim,
        num_heads=int(tr.get("n_head", 8)),
        num_layers=int(tr.get("n_layer", 8)),
        dropout=float(tr.get("dropout", 0.1)),
        bias=bool(tr.get("bias", False)),
        codebook_size=mt.codebook_size,
        pred_seq_len=mt.seq_len,
        num_views=mt.num_views,
        sampling=str(fdc.get("ar_sampling", "argmax")),
    )


def from_original_id(c: dict[str, Any], mt: MotionTokenizerConfig) -> InverseDynamicsConfig:
    """InverseDynamicsConfig from an original ``id.pt`` config dict and its tokenizer's config."""
    hidden = c.get("hidden_dim") or mt.hidden_dim
    horizon = c.get("action_horizon") or mt.true_horizon
    return InverseDynamicsConfig(
        head=str(c.get("type", "gaussian")),
        hidden_dim=int(hidden),
        num_heads=int(c.get("num_heads", 8)),
        num_layers=int(c.get("num_layers", 4)),
        dropout=float(c.get("attn_pdrop", 0.1)),
        action_dim=int(c.get("action_dim", 7)),
        action_horizon=int(horizon),
        action_squash=bool(c.get("action_squash", True)),
        action_squash_scale=float(c.get("action_squash_scale", 1.0)),
        std=float(c.get("std", 0.1)),
        action_loss_discount=float(c.get("action_loss_discount", 0.99)),
        cond_on_img=bool(c.get("cond_on_img", True)),
        cond_on_text=bool(c.get("cond_on_text", False)),
        cond_on_proprio=bool(c.get("cond_on_proprio", True)),
        cond_on_tracks=bool(c.get("cond_on_tracks", True)),
        proprio_dim=int(c.get("proprio_dim", 9)),
        num_img_tokens=int(c.get("num_img_tokens", 49)),
        img_embed_dim=int(c.get("img_embed_dim", 512 * mt.num_views)),
        text_embed_dim=int(c.get("text_embed_dim", 512)),
        num_code_tokens=mt.seq_len,
        diffusion_steps=int(c.get("diffusion_steps", 100)),
        flow_matching_steps=int(c.get("flow_matching_steps", 100)),
    )
