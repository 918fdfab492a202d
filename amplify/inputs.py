"""Input conversion, written once for every caller (the library, the service, the exported models'
runtime): images to float in [0, 1], instruction lookup, velocity integration, and the one
:class:`InputError` an input that does not fit the model raises.

numpy only (torch tensors are accepted where noted, without importing torch): a server of exported
models uses this module without the model library.

Shapes: b batch, v views, H x W images, t velocities per track, n tracks, E text-embedding size.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


class InputError(ValueError):
    """An input that does not fit the model. ``field`` names it; the message says what shape or
    values were expected and what came. The service answers it with a 400."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class UnknownInstructionError(KeyError):
    """Instruction text that is not in the model's table; ``missing`` lists the unknown ones."""

    def __init__(self, missing: list[str], known: Sequence[str]):
        self.missing = missing
        self.message = f"unknown instruction(s) {missing[:3]}; known: {list(known)[:5]}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


def unit_images(images: Any) -> Any:
    """Images as float32 in [0, 1]: uint8 (0-255) divided by 255, floats as they are.

    numpy in, a fresh numpy array out; a torch tensor in, a float32 tensor out."""
    # uint8: divided in place in the float copy (the same numbers as ``copy / 255``). A second full-size
    # buffer costs more than the division where its pages are fresh (a new process, a large batch):
    # measured 16 against 260 us for two 128 px views, 0.84 against 3.4 ms for 16 x 2 x 224 px.
    if isinstance(images, np.ndarray):
        out = images.astype(np.float32)
        if images.dtype == np.uint8:
            np.divide(out, np.float32(255.0), out=out)
        return out
    if str(images.dtype) == "torch.uint8":
        return images.float().div_(255.0)
    return images.float()


def instruction_rows(instructions: Sequence[str], text: Sequence[str]) -> list[int]:
    """The rows of ``text`` (b,) in a table of known ``instructions``; :class:`UnknownInstructionError`
    names the unknown ones."""
    index = {s: i for i, s in enumerate(instructions)}
    missing = [s for s in text if s not in index]
    if missing:
        raise UnknownInstructionError(missing, instructions)
    return [index[s] for s in text]


def integrate_velocities(velocities: np.ndarray, init_points: np.ndarray) -> np.ndarray:
    """Velocities (b, v, t, n, 2) and first points (b, v, n, 2), or tracks (b, v, H', n, 2) whose first
    points are used -> tracks (b, v, t+1, n, 2) float32 (not clamped)."""
    b, v, _, n, _ = velocities.shape
    init = init_points[:, :, None] if init_points.ndim == 4 else init_points[:, :, :1]
    if init.shape != (b, v, 1, n, 2):
        raise InputError(f"init_points: expected shape ({b}, {v}, {n}, 2), got {tuple(init_points.shape)}", "init_points")
    zeros = np.zeros((b, v, 1, n, 2), velocities.dtype)
    pts = np.cumsum(np.concatenate([zeros, velocities], axis=2), axis=2)
    return (pts + init.astype(pts.dtype)).astype(np.float32)
