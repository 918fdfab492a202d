"""Request arrays -> numpy arrays checked against the loaded model's shapes.

Every failure is an :class:`InputError` naming the field, the expected shape (from the model) and
what was received. Returned arrays are fresh, writable and of the dtype the back ends take.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from amplify.info import ModelInfo
from amplify.inputs import InputError, unit_images

FLOAT_KINDS = {np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)}
INDEX_KINDS = {np.dtype(np.int32), np.dtype(np.int64)}
MAX_IMAGE_SIDE = 2048
MIN_IMAGE_SIDE = 8


def _as_numpy(value: Any, field: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if value is None:
        raise InputError(f"{field} is required", field)
    if not isinstance(value, list):
        raise InputError(f"{field} must be an array (nested lists in JSON, an ndarray map in msgpack), "
                         f"got {type(value).__name__}", field)
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):
        raise InputError(f"{field} is ragged: every row must have the same length", field) from None
    if arr.dtype == object:
        raise InputError(f"{field} is ragged or holds non-numbers: every row must have the same length", field)
    if arr.size == 0 and arr.dtype.kind == "f":
        return arr
    if arr.dtype.kind not in "iuf":
        raise InputError(f"{field} must hold numbers, got {arr.dtype.kind!r} values", field)
    return arr


def _shape_str(shape: Sequence[Any]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def check_shape(arr: np.ndarray, field: str, expected: Sequence[int | str], names: str) -> None:
    """``expected`` has the batch as "b" and fixed sizes as ints; ``names`` spells the shape, e.g. "(b, v, H, n, 2)"."""
    ok = arr.ndim == len(expected) and all(isinstance(e, str) or d == e for d, e in zip(arr.shape, expected))
    if not ok:
        exp = _shape_str(expected)
        raise InputError(f"{field} must have shape {names} = {exp} for this model, got {_shape_str(arr.shape)}", field)
    if arr.shape[0] == 0:
        raise InputError(f"{field} has an empty batch (b = 0); send at least one sample", field)


def _finite(arr: np.ndarray, field: str) -> None:
    if not np.isfinite(arr).all():
        raise InputError(f"{field} holds non-finite values (NaN or inf)", field)


def float_array(value: Any, field: str, expected: Sequence[int | str], names: str,
                bound: float | None = None) -> np.ndarray:
    """A float field -> float32, shape-checked, finite, and within [-bound, bound] when given."""
    arr = _as_numpy(value, field)
    if isinstance(value, np.ndarray) and arr.dtype not in FLOAT_KINDS:
        raise InputError(f"{field} must be float16, float32 or float64, got {arr.dtype}", field)
    check_shape(arr, field, expected, names)
    out = arr.astype(np.float32)  # a copy: writable, contiguous
    _finite(out, field)
    if bound is not None and np.abs(out).max() > bound:
        raise InputError(f"{field} values must lie in [-{bound:g}, {bound:g}], got a value of {np.abs(out).max():g}", field)
    return out


def index_array(value: Any, field: str, expected: Sequence[int | str], names: str, codebook_size: int) -> np.ndarray:
    """An index field -> int64 in [0, codebook_size)."""
    arr = _as_numpy(value, field)
    if arr.dtype not in INDEX_KINDS and not (arr.dtype.kind in "iu" and not isinstance(value, np.ndarray)):
        raise InputError(f"{field} must be integers (int32 or int64), got {arr.dtype}", field)
    check_shape(arr, field, expected, names)
    out = arr.astype(np.int64)
    if out.min() < 0 or out.max() >= codebook_size:
        bad = out.min() if out.min() < 0 else out.max()
        raise InputError(f"{field} values must lie in [0, {codebook_size}) (the codebook size), got {bad}", field)
    return out


def image_array(value: Any, info: ModelInfo, field: str = "images") -> np.ndarray:
    """Images (b, v, H_img, W_img, 3), uint8 0-255 or float 0-1 -> float32 in [0, 1].

    In JSON, integer arrays are taken as 0-255 and arrays with a fraction as 0-1."""
    arr = _as_numpy(value, field)
    v = info.num_views
    names = f"(b, v={v}, H_img, W_img, 3) with views {info.views}"
    ok = arr.ndim == 5 and arr.shape[1] == v and arr.shape[4] == 3
    if not ok:
        raise InputError(f"{field} must have shape {names}, got {_shape_str(arr.shape)}", field)
    if arr.shape[0] == 0:
        raise InputError(f"{field} has an empty batch (b = 0); send at least one sample", field)
    h, w = arr.shape[2:4]
    if not (MIN_IMAGE_SIDE <= h <= MAX_IMAGE_SIDE and MIN_IMAGE_SIDE <= w <= MAX_IMAGE_SIDE):
        raise InputError(f"{field}: image sides must lie in [{MIN_IMAGE_SIDE}, {MAX_IMAGE_SIDE}] pixels, got {h}x{w} "
                         f"(the model was trained on {info.image_size[0]}x{info.image_size[1]})", field)
    if arr.dtype == np.uint8:
        return unit_images(arr)
    if arr.dtype.kind in "iu" and not isinstance(value, np.ndarray):  # JSON integers: 0-255
        if arr.min() < 0 or arr.max() > 255:
            raise InputError(f"{field}: integer pixel values must lie in [0, 255], got {arr.min()}..{arr.max()}", field)
        return unit_images(arr.astype(np.uint8))
    if arr.dtype not in FLOAT_KINDS:
        raise InputError(f"{field} must be uint8 (0-255) or float16/32/64 (0-1), got {arr.dtype}", field)
    out = arr.astype(np.float32)
    _finite(out, field)
    if out.min() < 0.0 or out.max() > 1.0:
        raise InputError(f"{field}: float pixel values must lie in [0, 1], got {out.min():g}..{out.max():g} "
                         "(send uint8 for 0-255)", field)
    return out


def same_batch(arrays: dict[str, np.ndarray | list | None]) -> int:
    """The common batch size of the given fields; 400 naming the field that disagrees."""
    batch, first = None, None
    for field, arr in arrays.items():
        if arr is None:
            continue
        b = len(arr)
        if batch is None:
            batch, first = b, field
        elif b != batch:
            raise InputError(f"{field} has batch {b} but {first} has batch {batch}; every field needs the same b", field)
    assert batch is not None
    return batch
