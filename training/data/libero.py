"""LIBERO demonstration files: ``<root>/<suite>/<task>_demo.hdf5``.

Each holds ``data/demo_<i>/actions`` (T, 7), ``obs/agentview_rgb`` and ``obs/eye_in_hand_rgb``
(T, 128, 128, 3) uint8 stored UPSIDE DOWN, ``obs/joint_states`` (T, 7), ``obs/gripper_states`` (T, 2).
"""
from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np

DEMO_SUFFIX = "_demo.hdf5"
IMAGE_KEYS = {"agentview": "agentview_rgb", "eye_in_hand": "eye_in_hand_rgb"}


def task_files(root: str | Path, suite: str) -> list[Path]:
    """The suite's demo files, sorted by name; FileNotFoundError names the directory looked in."""
    d = Path(root) / suite
    files = sorted(d.glob(f"*{DEMO_SUFFIX}"))
    if not files:
        raise FileNotFoundError(f"no LIBERO demo files (*{DEMO_SUFFIX}) in {d}")
    return files


def task_name(demo_file: str | Path) -> str:
    """``<task>_demo.hdf5`` -> ``<task>``."""
    name = Path(demo_file).name
    return name[: -len(DEMO_SUFFIX)] if name.endswith(DEMO_SUFFIX) else Path(demo_file).stem


def demo_keys(f: h5py.File) -> list[str]:
    """``demo_<i>`` groups of an open demo file, sorted by i."""
    keys = [k for k in f["data"].keys() if re.fullmatch(r"demo_\d+", k)]
    return sorted(keys, key=lambda k: int(k.split("_")[1]))


def read_instruction(f: h5py.File, fallback: str) -> str:
    """The language instruction a demo file carries (``data`` attrs), else the task name in words."""
    attrs = f["data"].attrs
    if "language_instruction" in attrs:
        v = attrs["language_instruction"]
        return v.decode() if isinstance(v, bytes) else str(v)
    if "problem_info" in attrs:
        import json
        try:
            return json.loads(attrs["problem_info"])["language_instruction"]
        except (ValueError, KeyError, TypeError):
            pass
    return fallback.replace("_", " ")


def read_low_dim(group: h5py.Group) -> dict[str, np.ndarray]:
    """A demo's actions (T, 7) float32 and proprioception (T, 9) = joints (7) + gripper (2)."""
    actions = np.asarray(group["actions"], dtype=np.float32)
    joints = np.asarray(group["obs/joint_states"], dtype=np.float32)
    gripper = np.asarray(group["obs/gripper_states"], dtype=np.float32)
    return {"actions": actions, "proprio": np.concatenate([joints, gripper], axis=1)}


def read_frame(group: h5py.Group, views: list[str], t: int) -> np.ndarray:
    """Images of step ``t`` of all views, flipped upright: (v, H, W, 3) uint8."""
    return np.stack([np.asarray(group["obs"][IMAGE_KEYS.get(v, f"{v}_rgb")][t])[::-1] for v in views])


def read_frames(group: h5py.Group, views: list[str]) -> np.ndarray:
    """All images of a demo, upright: (T, v, H, W, 3) uint8."""
    return np.stack([np.asarray(group["obs"][IMAGE_KEYS.get(v, f"{v}_rgb")])[:, ::-1] for v in views], axis=1)
