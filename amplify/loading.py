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


def load_motion_tokenizer(path: str | Path, device: str | torch.device = "cpu") -> tuple[MotionTokenizer, MotionTokenizerConfig]:
    """A motion tokenizer from an original ``mt.pt`` or a project directory -> (model, cfg)."""
    if detect_format(path) == "original":
        data = load_original(path)
        cfg = _config(from_original_mt, str(path), data["config"])
        state = clean_original_state_dict(data["model"])
    else:
        doc, state = read_dir(path)
        _expect_kind(doc, "motion_tokenizer", path)
        cfg = _config(from_dict, str(path), MotionTokenizerConfig, doc["config"])
    model = MotionTokenizer(cfg, init=False)
    load_state_into(model, state, str(path))
    return _finish(model, device), cfg


def load_forward_dynamics(path: str | Path, mt_cfg: MotionTokenizerConfig | None = None,
                          device: str | torch.device = "cpu") -> tuple[ForwardDynamics, ForwardDynamicsConfig]:
    """Forward dynamics from an original ``fd.pt`` (its tokenizer's config ``mt_cfg`` needed, since the
    original derives FD's sizes from it) or a project directory."""
    if detect_format(path) == "original":
        if mt_cfg is None:
            raise CheckpointError(f"{path}: an original fd.pt needs its motion tokenizer's config (mt_cfg)")
        data = load_original(path)
        cfg = _config(from_original_fd, str(path), data["config"], mt_cfg)
        state = clean_original_state_dict(data["model"])
    else:
        doc, state = read_dir(path)
        _expect_kind(doc, "forward_dynamics", path)
        cfg = _config(from_dict, str(path), ForwardDynamicsConfig, doc["config"])
    model = ForwardDynamics(cfg, init=False)
    load_state_into(model, state, str(path))
    return _finish(model, device), cfg


def load_inverse_dynamics(path: str | Path, mt_cfg: MotionTokenizerConfig | None = None,
                          device: str | torch.device = "cpu") -> tuple[InverseDynamics, InverseDynamicsConfig]:
    """Inverse dynamics from an original ``id.pt`` (with its tokenizer's config) or a project directory."""
    if detect_format(path) == "original":
        if mt_cfg is None:
            raise CheckpointError(f"{path}: an original id.pt needs its motion tokenizer's config (mt_cfg)")
        data = load_original(path)
        cfg = _config(from_original_id, str(path), data["config"], mt_cfg)
        state = clean_original_state_dict(data["model"])
    else:
        doc, state = read_dir(path)
        _expect_kind(doc, "inverse_dynamics", path)
        cfg = _config(from_dict, str(path), InverseDynamicsConfig, doc["config"])
    model = InverseDynamics(cfg, init=False)
    load_state_into(model, state, str(path))
    return _finish(model, device), cfg


def save_model(model: torch.nn.Module, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write a motion tokenizer, forward or inverse dynamics model in the project's format."""
    kind = KIND_OF.get(type(model))
    if kind is None:
        raise TypeError(f"cannot save {type(model).__name__}; use AMPLIFY.save for bundles")
    return save_dir(path, kind, to_dict(model.cfg), model.state_dict(), metadata)


def _expect_kind(doc: dict, kind: str, path) -> None:
    if doc["kind"] != kind:
        raise CheckpointError(f"{path}: holds a {doc['kind']}, not a {kind}")
