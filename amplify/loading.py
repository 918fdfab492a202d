"""Load and save the three models on their own, in either checkpoint format.

``load_motion_tokenizer(path)`` returns ``(model, cfg)`` as the original's loader does; ``path`` is an
original ``mt.pt`` or a project model directory. ``save_model(model, dir)`` writes the project's format.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from amplify.checkpoints import (
    CheckpointError, clean_original_state_dict, detect_format, load_original, load_state_into, read_dir, save_dir,
)
from amplify.config import (
    ConfigError, ForwardDynamicsConfig, InverseDynamicsConfig, MotionTokenizerConfig, from_dict,
    from_original_fd, from_original_id, from_original_mt, to_dict,
)
from amplify.models.forward_dynamics import ForwardDynamics
from amplify.models.inverse_dynamics import InverseDynamics
from amplify.models.motion_tokenizer import MotionTokenizer

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


def _load(path: str | Path, kind: str, model_cls: type, cfg_cls: type, from_original, device,
          mt_cfg: MotionTokenizerConfig | None = None, needs_mt: bool = False):
    """Shared body of the three loaders: read either format, build the config, load the weights."""
    if detect_format(path) == "original":
        if needs_mt and mt_cfg is None:
            raise CheckpointError(f"{path}: an original {kind} checkpoint needs its motion tokenizer's config (mt_cfg)")
        data = load_original(path)
        args = (data["config"], mt_cfg) if needs_mt else (data["config"],)
        cfg = _config(from_original, str(path), *args)
        state = clean_original_state_dict(data["model"])
    else:
        doc, state = read_dir(path)
        _expect_kind(doc, kind, path)
        cfg = _config(from_dict, str(path), cfg_cls, doc["config"])
    model = model_cls(cfg, init=False)
    load_state_into(model, state, str(path))
    return _finish(model, device), cfg


def load_motion_tokenizer(path: str | Path, device: str | torch.device = "cpu") -> tuple[MotionTokenizer, MotionTokenizerConfig]:
    """A motion tokenizer from an original ``mt.pt`` or a project directory -> (model, cfg)."""
    return _load(path, "motion_tokenizer", MotionTokenizer, MotionTokenizerConfig, from_original_mt, device)


def load_forward_dynamics(path: str | Path, mt_cfg: MotionTokenizerConfig | None = None,
                          device: str | torch.device = "cpu") -> tuple[ForwardDynamics, ForwardDynamicsConfig]:
    """Forward dynamics from an original ``fd.pt`` (its tokenizer's config ``mt_cfg`` needed, since the
    original derives FD's sizes from it) or a project directory."""
    return _load(path, "forward_dynamics", ForwardDynamics, ForwardDynamicsConfig, from_original_fd, device,
                 mt_cfg, needs_mt=True)


def load_inverse_dynamics(path: str | Path, mt_cfg: MotionTokenizerConfig | None = None,
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


def _expect_kind(doc: dict, kind: str, path) -> None:
    if doc["kind"] != kind:
        raise CheckpointError(f"{path}: holds a {doc['kind']}, not a {kind}")
