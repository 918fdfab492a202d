"""Track math shared by every part: coordinates, velocities and relative classes.

Shapes: b batch, v views, H points per track (time), t = H - 1 velocities, n tracks.
A point is (row, col) normalized to [-1, 1] with ``p = (pixel - S/2) / (S/2)`` per axis.
Works on torch tensors; numpy arrays are accepted and returned as numpy.
"""
from __future__ import annotations

from typing import Sequence, TypeVar

import numpy as np
import torch

Array = TypeVar("Array", torch.Tensor, np.ndarray)


def _to_torch(x: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, bool]:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x)), True
    return x, False


def _back(x: torch.Tensor, was_numpy: bool):
    return x.numpy() if was_numpy else x


def points_to_velocities(points: Array, time_dim: int = 2) -> Array:
    """First differences over time: ``vel[k] = pts[k+1] - pts[k]`` (H points -> H-1 velocities)."""
    pts, np_in = _to_torch(points)
    vel = torch.diff(pts, dim=time_dim)
    return _back(vel, np_in)


def velocities_to_points(velocities: Array, time_dim: int = 2, init_points: Array | None = None) -> Array:
    """Inverse of :func:`points_to_velocities`.

    Prepends a zero velocity, sums over time and adds ``init_points`` (the first points, with a
    time axis of length 1, e.g. ``pts[:, :, :1]``). Without ``init_points`` tracks start at 0.
    """
    vel, np_in = _to_torch(velocities)
    zero_shape = list(vel.shape)
    zero_shape[time_dim] = 1
    vel = torch.cat([vel.new_zeros(zero_shape), vel], dim=time_dim)
    pts = torch.cumsum(vel, dim=time_dim)
    if init_points is not None:
        init, _ = _to_torch(init_points)
        pts = pts + init.to(pts.dtype)
    return _back(pts, np_in)


def normalize_pixels(pixels: Array, img_size: Sequence[int]) -> Array:
    """Pixel (row, col) -> [-1, 1]: ``(pixel - S/2) / (S/2)`` per axis."""
    half = np.asarray(img_size, dtype=np.float64) / 2.0
    if isinstance(pixels, np.ndarray):
        return ((pixels - half) / half).astype(pixels.dtype if pixels.dtype.kind == "f" else np.float32)
    h = torch.as_tensor(half, dtype=pixels.dtype if pixels.is_floating_point() else torch.float32, device=pixels.device)
    return (pixels - h) / h


def unnormalize_points(points: Array, img_size: Sequence[int]) -> Array:
    """[-1, 1] -> pixel (row, col): ``p * S/2 + S/2`` per axis."""
    half = np.asarray(img_size, dtype=np.float64) / 2.0
    if isinstance(points, np.ndarray):
        return (points * half + half).astype(points.dtype)
    h = torch.as_tensor(half, dtype=points.dtype, device=points.device)
    return points * h + h


def relative_class_targets(
    prev_points: torch.Tensor,
    next_points: torch.Tensor,
    img_size: Sequence[int],
    grid_size: Sequence[int],
) -> torch.Tensor:
    """Relative-displacement class of each step, the motion tokenizer's training target.

    Both point sets are unnormalized to pixels, clamped to [0, S-1], rounded, subtracted and the
    displacement (dr, dc) is clamped to +-(R//2) and encoded as ``(dr + R0//2) * R1 + (dc + R1//2)``.
    ``prev_points``/``next_points``: (..., 2) normalized (row, col). Returns int64 (...).
    """
    s = torch.as_tensor(list(img_size), dtype=prev_points.dtype, device=prev_points.device)
    r0, r1 = int(grid_size[0]), int(grid_size[1])

    def to_px(p: torch.Tensor) -> torch.Tensor:
        px = p * (s / 2) + s / 2
        return torch.minimum(torch.clamp(px, min=0), s - 1).round().long()

    d = to_px(next_points) - to_px(prev_points)
    dr = d[..., 0].clamp(-(r0 // 2), r0 // 2)
    dc = d[..., 1].clamp(-(r1 // 2), r1 // 2)
    return (dr + r0 // 2) * r1 + (dc + r1 // 2)


def relative_classes_to_velocities(
    classes: torch.Tensor, img_size: Sequence[int], grid_size: Sequence[int], dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Class index (...) -> normalized velocity (..., 2): ``(dr, dc) / S * 2``."""
    r0, r1 = int(grid_size[0]), int(grid_size[1])
    dr = torch.div(classes, r1, rounding_mode="floor") - r0 // 2
    dc = classes % r1 - r1 // 2
    s = torch.as_tensor(list(img_size), dtype=dtype, device=classes.device)
    return torch.stack([dr, dc], dim=-1).to(dtype) / s * 2
