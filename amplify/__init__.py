"""AMPLIFY: motion tokenizer, forward dynamics, inverse dynamics and the bundled policy.

    from amplify import AMPLIFY, load_motion_tokenizer
    policy = AMPLIFY.load("amplify.pt", device="cpu")
    actions = policy.act(images, proprio, text_emb=text_emb)      # (b, A, action_dim)

The names below load on first use, so that the torch-free modules (``amplify.config``,
``amplify.info``, ``amplify.inputs``) can be imported without torch.
"""
from __future__ import annotations

import importlib
from typing import Any

from amplify.threads import configure_openmp as _configure_openmp

_configure_openmp()  # before torch loads libgomp: short OpenMP spin-waits (amplify/threads.py)

# public name -> the module that defines it
_EXPORTS = {
    "CheckpointError": "amplify.checkpoints",
    "FSQ_LEVELS": "amplify.config", "BundleConfig": "amplify.config", "ConfigError": "amplify.config",
    "ForwardDynamicsConfig": "amplify.config", "InverseDynamicsConfig": "amplify.config",
    "MotionTokenizerConfig": "amplify.config", "VisionEncoderConfig": "amplify.config", "fsq_levels": "amplify.config",
    "InputError": "amplify.inputs", "ModelInfo": "amplify.info",
    "load_forward_dynamics": "amplify.loading", "load_inverse_dynamics": "amplify.loading",
    "load_motion_tokenizer": "amplify.loading", "save_model": "amplify.loading",
    "ForwardDynamics": "amplify.models.forward_dynamics", "InverseDynamics": "amplify.models.inverse_dynamics",
    "MotionTokenizer": "amplify.models.motion_tokenizer", "VisionEncoder": "amplify.models.vision",
    "AMPLIFY": "amplify.policy",
    "points_to_velocities": "amplify.tracks", "velocities_to_points": "amplify.tracks",
}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'amplify' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
