"""openpi's WebSocket policy protocol: frames <-> observations and replies.

Wire format (as ``openpi-client`` 0.1.2 speaks it): every frame is binary msgpack. Arrays are maps
with msgpack *bin* keys ``{b"__ndarray__": True, b"data": <bytes>, b"dtype": "<f4", b"shape": [...]}``
(numpy scalars: ``{b"__npgeneric__": True, b"data": x, b"dtype": ...}``); this project's ndarray maps
(str keys) are accepted too; both are decoded by the one codec, :mod:`clients.codec`. Arrays are checked like every request array
(accepted dtypes, shape against the byte count, ``numpy.frombuffer``): nothing is unpickled.

An observation is one sample (no batch axis): ``observation/<view>`` (H, W, 3) for every model
view, ``observation/state`` (proprio_dim,), ``prompt`` (an instruction) or ``text_emb`` (E,), and
optionally ``sampling`` and ``seed``. ``{"observation": {"<view>": ..., "state": ...}}`` is read as
the flat keys.
"""
from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

from clients.codec import (
    WireError, encode_openpi, is_openpi_array, unpack_array, unpack_openpi_array, unpack_openpi_scalar,
)
from service import validation as V
from service.backends.base import ModelInfo
from service.errors import InputError

PREFIX = "observation/"
STATE = "observation/state"
OPTIONAL_KEYS = ("sampling", "seed")


def observation_keys(info: ModelInfo) -> dict[str, Any]:
    """The keys one observation must hold, for the metadata frame."""
    h, w = info.image_size
    return {
        "images": {f"{PREFIX}{v}": f"uint8 (H, W, 3), upright, any size (the model was trained on {h}x{w})"
                   for v in info.views},
        "state": {STATE: f"float ({info.proprio_dim},) proprioception"},
        "instruction": {"prompt": "str, an instruction (GET /metadata instructions, or any text with a text encoder)",
                        "text_emb": f"float ({info.text_embedding_dim},), instead of prompt"},
        "optional": {"sampling": "argmax (default) or topk", "seed": "int >= 0, seeds topk sampling"},
    }


def expected_keys(info: ModelInfo) -> list[str]:
    return [f"{PREFIX}{v}" for v in info.views] + [STATE, "prompt", "text_emb", *OPTIONAL_KEYS]


# ---------------------------------------------------------------------------------------------
# decoding
# ---------------------------------------------------------------------------------------------
def _value(obj: Any, field: str) -> Any:
    """A field's value, with ndarray maps (openpi's or this project's) and numpy scalars decoded and checked."""
    try:
        if isinstance(obj, dict):
            if is_openpi_array(obj):
                return unpack_openpi_array(obj, field)
            if obj.get(b"__npgeneric__") is True:
                return unpack_openpi_scalar(obj, field)
            if obj.get("__ndarray__") is True:
                return unpack_array(obj, field)
    except WireError as e:
        raise InputError(e.message, e.field) from None
    return obj


def decode_observation(frame: bytes) -> dict[str, Any]:
    """A binary frame -> a flat dict of fields (arrays as read-only numpy arrays)."""
    try:
        data = msgpack.unpackb(frame, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, TypeError, RecursionError) as e:
        raise InputError(f"the frame is not valid msgpack: {str(e)[:200]}", None) from None
    if not isinstance(data, dict):
        raise InputError(f"the frame must be a map of observation fields, got {type(data).__name__}", None)
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        if name == "observation" and isinstance(value, dict) and not _is_array_map(value):
            for sub, v in value.items():
                sub_name = sub.decode("utf-8", "replace") if isinstance(sub, bytes) else sub
                flat[PREFIX + sub_name] = _value(v, PREFIX + sub_name)
        else:
            flat[name] = _value(value, name)
    return flat


def _is_array_map(value: dict) -> bool:
    return is_openpi_array(value) or value.get("__ndarray__") is True


# ---------------------------------------------------------------------------------------------
# validation: an observation -> the inputs of /act (batch of one)
# ---------------------------------------------------------------------------------------------
def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"shape {tuple(value.shape)} {value.dtype}"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return type(value).__name__


def _image(obs: dict[str, Any], key: str) -> np.ndarray:
    if key not in obs:
        raise InputError(f"{key} is required: one image (H, W, 3) uint8 per model view", key)
    value = obs[key]
    arr = value if isinstance(value, np.ndarray) else None
    if arr is None and isinstance(value, list):
        try:
            arr = np.asarray(value)
        except ValueError:
            arr = None
    if arr is None or arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype.kind not in "uif":
        raise InputError(f"{key} must be an image of shape (H, W, 3), uint8 0-255 (or float 0-1), got {_describe(value)}",
                         key)
    return arr


def _vector(value: Any, key: str, size: int, what: str) -> np.ndarray:
    """A float vector (size,) -> (1, size) float32, finite."""
    if value is None:
        raise InputError(f"{key} is required: float ({size},) {what}", key)
    arr = value if isinstance(value, np.ndarray) else None
    if arr is None and isinstance(value, list):
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (ValueError, TypeError):
            arr = None
    if arr is None or arr.shape != (size,) or arr.dtype.kind not in "iuf":
        raise InputError(f"{key} must be a float array of shape ({size},) ({what}), got {_describe(value)}", key)
    return V.float_array(arr.astype(np.float32)[None], key, ("b", size), f"({size},)")


def act_inputs(obs: dict[str, Any], info: ModelInfo) -> tuple[dict[str, Any], str, int | None]:
    """Check one observation -> ({"images" (1, v, H, W, 3) float32, "proprio" (1, P), "text_emb" (1, E) or
    "text" [str]}, sampling, seed). Every error names the field, what is expected and what came."""
    allowed = set(expected_keys(info))
    unknown = sorted(k for k in obs if k not in allowed)
    if unknown:
        raise InputError(f"unknown observation key {unknown[0]!r}; this model takes {sorted(allowed)}", unknown[0])
    views = [_image(obs, f"{PREFIX}{v}") for v in info.views]
    first = f"{PREFIX}{info.views[0]}"
    for v, img in zip(info.views[1:], views[1:]):
        if img.shape != views[0].shape or img.dtype != views[0].dtype:
            raise InputError(f"{PREFIX}{v} is {_describe(img)} but {first} is {_describe(views[0])}; every view needs "
                             "the same size and dtype", f"{PREFIX}{v}")
    images = V.image_array(np.stack(views)[None], info, field=first)  # (1, v, H, W, 3) float32 in [0, 1]
    proprio = _vector(obs.get(STATE), STATE, info.proprio_dim, "proprioception")
    x: dict[str, Any] = {"images": images, "proprio": proprio}
    prompt, emb = obs.get("prompt"), obs.get("text_emb")
    if (prompt is None) == (emb is None):
        raise InputError("send exactly one of `prompt` (an instruction) and `text_emb`"
                         + (" (both were sent)" if prompt is not None else ""), "prompt")
    if prompt is not None:
        if isinstance(prompt, bytes):
            prompt = prompt.decode("utf-8", "replace")
        if isinstance(prompt, np.ndarray) and prompt.ndim == 0:
            prompt = str(prompt)
        if not isinstance(prompt, str):
            raise InputError(f"prompt must be a string, got {_describe(prompt)}", "prompt")
        x["text"] = [prompt]
    else:
        x["text_emb"] = _vector(emb, "text_emb", info.text_embedding_dim, "text embedding")
    sampling = obs.get("sampling", "argmax")
    if sampling not in ("argmax", "topk"):
        raise InputError(f"sampling must be 'argmax' or 'topk', got {sampling!r}", "sampling")
    seed = obs.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise InputError(f"seed must be an integer in [0, 2**63), got {seed!r}", "seed")
    return x, sampling, seed


def pack_frame(obj: dict[str, Any]) -> bytes:
    """A reply or the metadata frame, numpy arrays in openpi's encoding (:func:`clients.codec.encode_openpi`)."""
    return encode_openpi(obj)
