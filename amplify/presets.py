"""Named bundle configurations: ``paper`` (the paper's defaults) and ``small`` (tests, quick demos)."""
from __future__ import annotations

from amplify.config import BundleConfig, ForwardDynamicsConfig, InverseDynamicsConfig, MotionTokenizerConfig


def paper() -> BundleConfig:
    """Hidden 768, MT 2 layers, FD 8 layers, ID 4 layers, 400 tracks, two views, codebook 2048."""
    mt = MotionTokenizerConfig()
    return BundleConfig(
        motion_tokenizer=mt,
        forward_dynamics=ForwardDynamicsConfig(hidden_dim=768, num_heads=8, num_layers=8, codebook_size=2048,
                                               pred_seq_len=mt.seq_len, num_views=2),
        inverse_dynamics=InverseDynamicsConfig(hidden_dim=768, num_heads=8, num_layers=4, action_horizon=mt.true_horizon,
                                               num_code_tokens=mt.seq_len, img_embed_dim=1024),
    )


def small() -> BundleConfig:
    """The size of the 'small' reference fixture: hidden 64, 16 tracks, codebook 64."""
    mt = MotionTokenizerConfig(num_tracks=16, hidden_dim=64, num_heads=4, num_layers=2, codebook_size=64,
                               decoder_mlp_hidden_dim=32)
    return BundleConfig(
        motion_tokenizer=mt,
        forward_dynamics=ForwardDynamicsConfig(hidden_dim=64, num_heads=4, num_layers=2, codebook_size=64,
                                               pred_seq_len=mt.seq_len, num_views=2),
        inverse_dynamics=InverseDynamicsConfig(hidden_dim=64, num_heads=4, num_layers=2, action_horizon=mt.true_horizon,
                                               num_code_tokens=mt.seq_len, img_embed_dim=1024),
    )


PRESETS = {"paper": paper, "small": small}


def preset(name: str) -> BundleConfig:
    """A preset by name; ValueError lists the names."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
