"""Typed training configurations, one per trainer, with ``key=value`` overrides (``amplify.config.apply_overrides``).

Run settings are top-level keys (``epochs=20``), the rest nested (``optim.lr=1e-3``,
``data.root=DIR``, ``model.hidden_dim=128``). The whole config is saved beside every checkpoint
(``train_config.json``) and the model's own config inside it (``config.json``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from amplify.config import (
    ForwardDynamicsConfig, InverseDynamicsConfig, MotionTokenizerConfig, VisionEncoderConfig,
)
from training.data.dataset import DataConfig


@dataclass
class OptimConfig:
    """AdamW with a linear warm-up then cosine decay to ``min_lr_ratio * lr``."""

    lr: float = 3e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.01  # applied to matrices only, not to biases, norms and embeddings' 1-d params
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1


@dataclass
class TrainConfig:
    """What every trainer shares."""

    out: str = "runs/train"
    epochs: int = 10
    batch_size: int = 64  # global optimizer batch (over all processes and accumulation steps)
    gpu_max_bs: int = 64  # largest micro-batch per process; batch_size is reached by accumulation
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto (fp16 + GradScaler on CUDA, off on CPU) | off | bf16 | fp16
    compile: bool = False  # torch.compile the loss module
    save_every: int = 1  # keep epoch_<k>/ every k epochs (latest/ is written every epoch); 0: latest only
    val_every: int = 1  # validate every k epochs; 0: never
    log_every: int = 10  # optimizer steps between log lines
    max_steps_per_epoch: int = 0  # cap (tests, smoke runs); 0: the whole dataset
    val_max_batches: int = 0  # cap on validation batches; 0: all
    stop_after: int = 0  # leave after this many epochs in this invocation (a time-limited job); resume later
    resume: bool = False  # continue from <out>/latest when it exists
    progress: bool = True  # tqdm progress bars
    plots: bool = True  # write <out>/plots/*.png (needs matplotlib) after the last epoch
    # and every plot_every epochs; 0: only after the last (a curves figure of ~60 metrics takes ~5 s to draw)
    plot_every: int = 0
    cache_dir: str = ""  # image-token cache; '' = <data.root>/.amplify_cache
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)


@dataclass
class MTTrainConfig(TrainConfig):
    """``amplify train mt``: the motion tokenizer from point tracks."""

    out: str = "runs/mt"
    input_init: bool = True  # data-dependent init of the input projection (see trainers/mt.py)
    # extra loss weight of point-steps that move (> 0.5 px): 0 is the original loss (get_loss); with
    # few moving points (0.5 % in a fixed camera) the plain mean is minimized by "nothing moves"
    moving_weight: float = 0.0
    # per-view overrides of moving_weight ({view: weight}; views not named use moving_weight): a
    # fixed camera's few moving points (agentview) can be weighted more than a moving camera's
    moving_weights: dict[str, float] = field(default_factory=dict)
    # learning-rate multiplier of the FSQ quantizer's projections (project_in grows fast and drives
    # every code to an extreme level; a smaller rate keeps its input in tanh's responsive range)
    quantizer_lr_scale: float = 1.0
    model: MotionTokenizerConfig = field(default_factory=MotionTokenizerConfig)


@dataclass
class VisionSettings:
    """The vision encoder: weights from a file, or seeded random with calibrated BatchNorm; frozen,
    or (FD only, ``frozen=false``) trained with the forward dynamics at ``lr_scale`` times its rate."""

    weights: str = ""  # a vision.safetensors (e.g. the FD run's); '' builds a seeded random one
    seed: int = 0
    image_size: int = 128  # 128 -> 4x4 = 16 tokens per view; 64 -> 2x2; 224 -> 7x7 (the paper)
    calibration_images: int = 256
    # frozen=false (FD): the trunk's weights train with FD's loss (BatchNorm keeps its statistics),
    # images are encoded every batch (no token cache) and the trained trunk is written to <out>/vision.safetensors
    frozen: bool = True
    lr_scale: float = 0.1  # the trunk's learning rate over FD's, when not frozen


@dataclass
class FDTrainConfig(TrainConfig):
    """``amplify train fd``: forward dynamics; targets from a frozen motion tokenizer (``mt=DIR``).

    ``model.hidden_dim/codebook_size/pred_seq_len/num_views`` and ``img_tokens_per_view`` are taken
    from the tokenizer and the vision encoder."""

    out: str = "runs/fd"
    mt: str = ""
    vision: VisionSettings = field(default_factory=VisionSettings)
    val_ar: bool = True  # validate with autoregressive prediction (token accuracy, track error)
    model: ForwardDynamicsConfig = field(default_factory=ForwardDynamicsConfig)


@dataclass
class IDTrainConfig(TrainConfig):
    """``amplify train id``: inverse dynamics on ground-truth codes (``codes=gt``, from ``mt=DIR``)
    or on a frozen forward-dynamics model's predictions (``codes=fd``, ``fd=DIR``)."""

    out: str = "runs/id"
    mt: str = ""
    fd: str = ""
    codes: str = "gt"  # gt | fd
    vision: VisionSettings = field(default_factory=VisionSettings)
    model: InverseDynamicsConfig = field(default_factory=InverseDynamicsConfig)


def vision_config(v: VisionSettings) -> VisionEncoderConfig:
    s = v.image_size
    if s % 32:
        raise ValueError(f"vision.image_size must be a multiple of 32, got {s}")
    return VisionEncoderConfig(image_size=s, num_tokens=(s // 32) ** 2)
