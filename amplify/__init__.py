"""AMPLIFY: motion tokenizer, forward dynamics, inverse dynamics and the bundled policy.

    from amplify import AMPLIFY, load_motion_tokenizer
    policy = AMPLIFY.load("amplify.pt", device="cpu")
    actions = policy.act(images, proprio, text_emb=text_emb)      # (b, A, action_dim)
"""
from amplify.threads import configure_openmp as _configure_openmp

_configure_openmp()  # before torch loads libgomp: short OpenMP spin-waits (amplify/threads.py)

from amplify.checkpoints import CheckpointError
from amplify.config import (
    FSQ_LEVELS, BundleConfig, ConfigError, ForwardDynamicsConfig, InverseDynamicsConfig,
    MotionTokenizerConfig, VisionEncoderConfig, fsq_levels,
)
from amplify.loading import load_forward_dynamics, load_inverse_dynamics, load_motion_tokenizer, save_model
from amplify.models.forward_dynamics import ForwardDynamics
from amplify.models.inverse_dynamics import InverseDynamics
from amplify.models.motion_tokenizer import MotionTokenizer
from amplify.models.vision import VisionEncoder
from amplify.policy import AMPLIFY
from amplify.tracks import points_to_velocities, velocities_to_points

__all__ = [
    "AMPLIFY", "BundleConfig", "CheckpointError", "ConfigError", "FSQ_LEVELS", "ForwardDynamics",
    "ForwardDynamicsConfig", "InverseDynamics", "InverseDynamicsConfig", "MotionTokenizer",
    "MotionTokenizerConfig", "VisionEncoder", "VisionEncoderConfig", "fsq_levels",
    "load_forward_dynamics", "load_inverse_dynamics", "load_motion_tokenizer", "points_to_velocities",
    "save_model", "velocities_to_points",
]
__version__ = "0.1.0"
