"""Fixtures for the training tests: a small built-in-world dataset and tiny model settings."""
from __future__ import annotations

from pathlib import Path

import pytest

SUITE = "builtin_push"
POINTS = 16
HORIZON = 16


@pytest.fixture(scope="session")
def world_root(tmp_path_factory) -> Path:
    """builtin_push (4 tasks), 3 demos each, 16 tracks per view: LIBERO + AMPLIFY layouts."""
    from world.generate import generate

    root = tmp_path_factory.mktemp("world_data")
    generate(SUITE, str(root), demos_per_task=3, num_points=POINTS, horizon=HORIZON, workers=1)
    return root


def tiny_overrides(root: Path, out: Path, **extra) -> list[str]:
    """Overrides for a seconds-long run of any trainer on ``world_root``."""
    items = {
        "data.root": str(root), "data.train": f"[{SUITE}:traj0.67]", "data.val": f"[{SUITE}:traj-0.34]",
        "data.frame_stride": 4, "out": str(out), "epochs": 1, "batch_size": 8, "max_steps_per_epoch": 3,
        "val_max_batches": 1, "progress": "false", "plots": "false", "log_every": 1, "save_every": 0,
        "cache_dir": str(out / "cache"),
    }
    items.update(extra)
    return [f"{k}={v}" for k, v in items.items()]


MT_TINY = {"model.num_tracks": POINTS, "model.hidden_dim": 32, "model.num_heads": 2, "model.codebook_size": 64,
           "model.decoder_mlp_hidden_dim": 16, "model.rel_cls_img_size": "[9,9]"}
VISION_TINY = {"vision.image_size": 64, "vision.calibration_images": 8}
