"""Every way a model is read, in one place: original files (``amplify.pt``, ``mt.pt``, ``fd.pt``,
``id.pt``), project directories, the default bundle and the untrained fallback, and the model's name
and version. (Export directories are read by ``exporters.runtime``; their description is
:meth:`amplify.info.ModelInfo.from_manifest`.)

    policy = load_bundle("amplify.pt")                  # = AMPLIFY.load
    mt, cfg = load_motion_tokenizer("mt.pt")            # (model, cfg), as the original's loader
    ckpt = read_checkpoint("any checkpoint")            # format, kind, config, tensors: read once
    loaded = load_model("any checkpoint")               # LoadedModel: kind, model, name, version, ...
    loaded = load_servable(None)                        # the default bundle, else an untrained one

``save_model(model, dir)`` writes the project's format (bundles: ``AMPLIFY.save``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from amplify.checkpoints import (
    KINDS, CheckpointError, clean_original_state_dict, detect_format, file_sha256, load_original, load_state_into,
    read_dir, save_dir,
)
from amplify.config import (
    BundleConfig, ConfigError, ForwardDynamicsConfig, InverseDynamicsConfig, MotionTokenizerConfig,
    VisionEncoderConfig, from_dict, from_original_fd, from_original_id, from_original_mt, to_dict,
)
from amplify.defaults import default_bundle_dir, default_model_dir, shipped_bundle_dir
from amplify.models.forward_dynamics import ForwardDynamics
from amplify.models.inverse_dynamics import InverseDynamics
from amplify.models.motion_tokenizer import MotionTokenizer
from amplify.policy import _SHARED_PREFIX, AMPLIFY, TEXT_TABLE_KEY
from amplify.presets import small

log = logging.getLogger("amplify")

KIND_OF = {MotionTokenizer: "motion_tokenizer", ForwardDynamics: "forward_dynamics", InverseDynamics: "inverse_dynamics"}
CONFIG_OF = {"motion_tokenizer": MotionTokenizerConfig, "forward_dynamics": ForwardDynamicsConfig,
             "inverse_dynamics": InverseDynamicsConfig}


def _config(builder, source: str, *args):
    try:
        return builder(*args)
    except (ConfigError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: config cannot build the model: {e}") from None


def _finish(model: torch.nn.Module, device: str | torch.device) -> torch.nn.Module:
    return model.to(device).eval()


class WrongKind(CheckpointError):
    """A checkpoint that holds another kind of model than the caller takes."""

    def __init__(self, path: Path, kind: str, wanted: tuple[str, ...]):
        self.path, self.kind, self.wanted = path, kind, wanted
        super().__init__(f"{path}: holds a {kind} model alone, not a {' or '.join(wanted)}")


@dataclass
class Checkpoint:
    """A checkpoint read once: its format, the kind of model it holds, its config and its tensors."""

    path: Path
    format: str                       # original | project
    kind: str                         # bundle | motion_tokenizer | forward_dynamics | inverse_dynamics
    config: dict[str, Any]            # the original's config dict, or the project's typed config as a dict
    state: dict[str, torch.Tensor]
    metadata: dict[str, Any]          # the project's metadata, or the original file's own "metadata"


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read an original ``.pt`` file or a project directory (the format is detected once);
    CheckpointError names what is wrong."""
    p = Path(path)
    if detect_format(p) == "original":
        data = load_original(p)
        config = data.get("config") or {}
        try:
            kind = original_kind(config)
        except CheckpointError as e:
            raise CheckpointError(f"{p}: {e}") from None
        return Checkpoint(p, "original", kind, config, data["model"], dict(data.get("metadata") or {}))
    doc, state = read_dir(p)
    return Checkpoint(p, "project", doc["kind"], doc["config"], state, dict(doc.get("metadata", {})))


def _load(source: str | Path | Checkpoint, kind: str, model_cls: type, cfg_cls: type, from_original, device,
          mt_cfg: MotionTokenizerConfig | None = None, needs_mt: bool = False):
    """Shared body of the three loaders: read either format, build the config, load the weights."""
    ckpt = source if isinstance(source, Checkpoint) else read_checkpoint(source)
    path = ckpt.path
    if ckpt.format == "original":
        if needs_mt and mt_cfg is None:
            raise CheckpointError(f"{path}: an original {kind} checkpoint needs its motion tokenizer's config (mt_cfg)")
        args = (ckpt.config, mt_cfg) if needs_mt else (ckpt.config,)
        cfg = _config(from_original, str(path), *args)
        state = clean_original_state_dict(ckpt.state)
    else:
        if ckpt.kind != kind:
            raise CheckpointError(f"{path}: holds a {ckpt.kind}, not a {kind}")
        cfg = _config(from_dict, str(path), cfg_cls, ckpt.config)
        state = ckpt.state
    model = model_cls(cfg, init=False)
    load_state_into(model, state, str(path))
    return _finish(model, device), cfg


def load_motion_tokenizer(path: str | Path | Checkpoint, device: str | torch.device = "cpu") -> tuple[MotionTokenizer, MotionTokenizerConfig]:
    """A motion tokenizer from an original ``mt.pt`` or a project directory -> (model, cfg)."""
    return _load(path, "motion_tokenizer", MotionTokenizer, MotionTokenizerConfig, from_original_mt, device)


def load_forward_dynamics(path: str | Path | Checkpoint, mt_cfg: MotionTokenizerConfig | None = None,
                          device: str | torch.device = "cpu") -> tuple[ForwardDynamics, ForwardDynamicsConfig]:
    """Forward dynamics from an original ``fd.pt`` (its tokenizer's config ``mt_cfg`` needed, since the
    original derives FD's sizes from it) or a project directory."""
    return _load(path, "forward_dynamics", ForwardDynamics, ForwardDynamicsConfig, from_original_fd, device,
                 mt_cfg, needs_mt=True)


def load_inverse_dynamics(path: str | Path | Checkpoint, mt_cfg: MotionTokenizerConfig | None = None,
                          device: str | torch.device = "cpu") -> tuple[InverseDynamics, InverseDynamicsConfig]:
    """Inverse dynamics from an original ``id.pt`` (with its tokenizer's config) or a project directory."""
    return _load(path, "inverse_dynamics", InverseDynamics, InverseDynamicsConfig, from_original_id, device,
                 mt_cfg, needs_mt=True)


def save_model(model: torch.nn.Module, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write a motion tokenizer, forward or inverse dynamics model in the project's format."""
    kind = KIND_OF.get(type(model))
    if kind is None:
        raise TypeError(f"cannot save {type(model).__name__}; use AMPLIFY.save for bundles")
    return save_dir(path, kind, to_dict(model.cfg), model.state_dict(), metadata)



# ---------------------------------------------------------------------------------------------
# bundles
# ---------------------------------------------------------------------------------------------
def original_kind(config: dict) -> str:
    """Which model an original checkpoint's config describes: bundle, motion_tokenizer,
    forward_dynamics or inverse_dynamics."""
    if "motion_tokenizer_cfg" in config:
        return "bundle"
    if "forward_dynamics" in config:
        return "forward_dynamics"
    if "action_dim" in config and "type" in config and "codebook_size" not in config:
        return "inverse_dynamics"
    if "codebook_size" in config:
        return "motion_tokenizer"
    raise CheckpointError("cannot tell which model this checkpoint holds from its config")


def load_bundle(source: str | Path | Checkpoint, device: str | torch.device = "cpu",
                vision_weights: str | Path | None = None) -> AMPLIFY:
    """A bundle from the original ``amplify.pt`` or a project directory (``AMPLIFY.load``).

    ``vision_weights`` replaces the vision encoder's weights (a safetensors file or a state dict
    saved with torch) and is required only where the checkpoint holds none."""
    ckpt = source if isinstance(source, Checkpoint) else read_checkpoint(source)
    path = ckpt.path
    if ckpt.format == "original":
        c = ckpt.config
        try:
            mt = from_original_mt(c["motion_tokenizer_cfg"])
            cfg = BundleConfig(
                motion_tokenizer=mt,
                forward_dynamics=from_original_fd(c["forward_dynamics_cfg"], mt),
                inverse_dynamics=from_original_id(c["inverse_dynamics_cfg"], mt),
                vision=VisionEncoderConfig(model_name=(c.get("vision_encoder_cfg") or {}).get("model_name", "resnet18")),
            )
            model = AMPLIFY(cfg, init=False)
        except (ConfigError, KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: config cannot build the bundle: {e}") from None
        load_state_into(model, clean_original_state_dict(ckpt.state), str(path))
        model.metadata = {"source": "original", "original_metadata": ckpt.metadata}
    else:
        if ckpt.kind != "bundle":
            raise CheckpointError(f"{path}: holds a {ckpt.kind}, not a bundle")
        try:
            model = AMPLIFY(from_dict(BundleConfig, ckpt.config), init=False)
        except (ConfigError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: config cannot build the bundle: {e}") from None
        state = dict(ckpt.state)
        table = state.pop(TEXT_TABLE_KEY, None)
        load_state_into(model, state, str(path), allow_missing=(_SHARED_PREFIX,))
        model.metadata = dict(ckpt.metadata)
        instructions = model.metadata.pop("instructions", [])
        if instructions and table is not None:
            model.set_instructions(instructions, table)
    if vision_weights is not None:
        load_vision_weights(model, vision_weights)
    return model.to(device).eval()


def assemble_bundle(mt_path: str | Path, fd_path: str | Path, id_path: str | Path,
                    vision_weights: str | Path | None = None, random_vision: bool = False,
                    device: str | torch.device = "cpu") -> AMPLIFY:
    """A bundle from standalone checkpoints (either format; ``AMPLIFY.from_parts``).

    Standalone files hold no vision-encoder weights: name a local weights file, or pass
    ``random_vision=True`` to keep a random initialization (benchmarks only). Nothing is downloaded."""
    if vision_weights is None and not random_vision:
        raise CheckpointError(
            "standalone checkpoints hold no vision-encoder weights: pass vision_weights=<local file> "
            "(e.g. an original amplify.pt's img_encoder, exported with 'amplify convert')"
        )
    mt, mt_cfg = load_motion_tokenizer(mt_path)
    fd, fd_cfg = load_forward_dynamics(fd_path, mt_cfg)
    idm, id_cfg = load_inverse_dynamics(id_path, mt_cfg)
    model = AMPLIFY(BundleConfig(mt_cfg, fd_cfg, id_cfg), init=False)
    model.motion_tokenizer.load_state_dict(mt.state_dict())
    fd_state = {k: v for k, v in fd.state_dict().items() if not k.startswith("quantize.")}
    model.forward_dynamics.load_state_dict(fd_state, strict=False)
    model.inverse_dynamics.load_state_dict(idm.state_dict())
    model.metadata = {"source_checkpoints": {"mt": str(mt_path), "fd": str(fd_path), "id": str(id_path)}}
    if vision_weights is not None:
        load_vision_weights(model, vision_weights)
    return model.to(device).eval()


def load_vision_weights(model: AMPLIFY, path: str | Path) -> None:
    """Load ResNet-18 trunk weights into ``model`` from a local file (safetensors, project bundle or
    torch state dict). Keys may be bare (``0.weight``), trunk-prefixed (``model.0.weight``) or
    bundle-prefixed (``img_encoder.model.0.weight``)."""
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
    load_state_into(model.img_encoder.model, trunk, str(p))


# ---------------------------------------------------------------------------------------------
# any checkpoint, with its name and version; what a server loads
# ---------------------------------------------------------------------------------------------
@dataclass
class LoadedModel:
    """A loaded model and what is known about it (for /metadata and export manifests)."""

    kind: str                       # bundle | motion_tokenizer | forward_dynamics | inverse_dynamics
    model: torch.nn.Module          # in eval mode
    name: str
    version: str                    # the checkpoint's metadata version, else 12 hex digits of its weights' hash
    format: str                     # original | amplify-dir | random
    trained: bool | None
    path: Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """{"name", "version", "format", "trained"[, "path"][, "evaluation"][, "execute"][, "gripper_hold"]};
        ``evaluation`` is the closed-loop summary that ``amplify build-default --eval-per-task`` records in a
        bundle, ``execute`` the actions its recipe runs from each predicted chunk, ``gripper_hold`` the steps a
        changed gripper command is kept (``clients.libero.execution.GripperLatch``)."""
        out = {"name": self.name, "version": self.version, "format": self.format, "trained": self.trained}
        if self.path is not None:
            out["path"] = str(self.path)
        if isinstance(self.metadata.get("evaluation"), dict):
            out["evaluation"] = self.metadata["evaluation"]
        for key in ("execute", "gripper_hold"):
            if isinstance(self.metadata.get(key), int):
                out[key] = self.metadata[key]
        return out


def model_name(path: Path, metadata: dict[str, Any]) -> str:
    """The checkpoint's metadata name, else the file's parent directory or the directory's name."""
    return str(metadata.get("name") or (path.parent.name if path.is_file() else path.name))


def model_version(path: Path, metadata: dict[str, Any]) -> str:
    """The checkpoint's metadata version, else the first 12 hex digits of its weights' SHA-256
    (the ``.pt`` file, or a directory's ``model.safetensors``)."""
    if metadata.get("version"):
        return str(metadata["version"])
    weights = path if path.is_file() else path / "model.safetensors"
    return file_sha256(weights)[:12] if weights.is_file() else "unknown"


def load_model(path: str | Path, device: str | torch.device = "cpu", mt_path: str | Path | None = None,
               kinds: tuple[str, ...] = KINDS) -> LoadedModel:
    """Any checkpoint, either format, read once: a bundle, or a motion tokenizer, forward or inverse
    dynamics model alone (the last two in the original format need their tokenizer, ``mt_path``).
    A checkpoint of a kind outside ``kinds`` is refused before its model is built."""
    ckpt = read_checkpoint(path)
    if ckpt.kind not in kinds:
        raise WrongKind(ckpt.path, ckpt.kind, kinds)
    if ckpt.kind == "bundle":
        model = load_bundle(ckpt, device)
        metadata = dict(model.metadata)
    else:
        mt_cfg = load_motion_tokenizer(mt_path)[1] if mt_path is not None else None
        loaders = {"motion_tokenizer": (MotionTokenizer, MotionTokenizerConfig, from_original_mt, False),
                   "forward_dynamics": (ForwardDynamics, ForwardDynamicsConfig, from_original_fd, True),
                   "inverse_dynamics": (InverseDynamics, InverseDynamicsConfig, from_original_id, True)}
        model_cls, cfg_cls, from_original, needs_mt = loaders[ckpt.kind]
        model, _ = _load(ckpt, ckpt.kind, model_cls, cfg_cls, from_original, device, mt_cfg, needs_mt)
        metadata = ckpt.metadata if ckpt.format == "project" else {}
    p = ckpt.path
    return LoadedModel(kind=ckpt.kind, model=model, name=model_name(p, metadata), version=model_version(p, metadata),
                       format="original" if ckpt.format == "original" else "amplify-dir",
                       trained=bool(metadata.get("trained", True)), path=p, metadata=metadata)


def load_servable(path: str | Path | None, device: str | torch.device = "cpu", seed: int = 0) -> LoadedModel:
    """The bundle a server serves: ``path`` (amplify.pt or a project directory); None: the default
    model (the user's build, else the shipped bundle: ``amplify.defaults.default_model_dir``), else an
    UNTRAINED ``small`` bundle made with ``seed`` (logged as a warning)."""
    if path is None:
        path = default_model_dir()
    if path is None:
        log.warning("no model given, no default bundle at %s and none shipped at %s: serving an UNTRAINED small "
                    "bundle", default_bundle_dir(), shipped_bundle_dir())
        torch.manual_seed(seed)
        model = AMPLIFY(small()).to(device).eval()
        return LoadedModel(kind="bundle", model=model, name="untrained-small", version=f"seed-{seed}", format="random",
                           trained=False)
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"model {p} does not exist")
    if p.is_dir() and (p / "manifest.json").is_file():
        raise ValueError(f"{p} is an `amplify export` directory: serve it with --backend torchscript or onnx")
    return load_model(p, device, kinds=("bundle",))
