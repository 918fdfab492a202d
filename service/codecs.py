"""Request and response bodies: JSON and msgpack, with numpy arrays in both.

JSON arrays are nested lists. msgpack arrays are maps
``{"__ndarray__": true, "dtype": "<f4", "shape": [...], "data": <bytes>}`` decoded with
``numpy.frombuffer`` (zero copy; nothing is ever unpickled) after checking the dtype against the
accepted list and the shape against the byte count.
"""
from __future__ import annotations

import json
import math
from typing import Any

import msgpack
import numpy as np

from service.errors import InputError, UnsupportedMediaType

JSON = "application/json"
MSGPACK = "application/msgpack"
_MSGPACK_ALIASES = {"application/msgpack", "application/x-msgpack", "application/vnd.msgpack"}

# Accepted little-endian dtypes of msgpack arrays ("|u1" is how numpy spells uint8).
ACCEPTED_DTYPES = {"<f2", "<f4", "<f8", "|u1", "<u1", "u1", "<i4", "<i8"}
MAX_NDIM = 8
MAX_DIM = 1 << 24


def media_type(content_type: str | None) -> str:
    """The body's encoding from ``Content-Type``; 415 for anything but JSON or msgpack."""
    base = (content_type or "").split(";")[0].strip().lower()
    if base in ("", JSON) or base.endswith("+json"):
        return JSON
    if base in _MSGPACK_ALIASES:
        return MSGPACK
    raise UnsupportedMediaType(f"Content-Type {base!r} is not supported; send {JSON} or {MSGPACK}", "Content-Type")


def response_type(accept: str | None, request_type: str) -> str:
    """The response encoding: what ``Accept`` names, else the request's encoding."""
    for part in (accept or "").split(","):
        base = part.split(";")[0].strip().lower()
        if base in _MSGPACK_ALIASES:
            return MSGPACK
        if base == JSON or base.endswith("+json"):
            return JSON
    return request_type


def _ndarray_from_map(obj: dict[str, Any], field: str) -> np.ndarray:
    dtype, shape, data = obj.get("dtype"), obj.get("shape"), obj.get("data")
    if not isinstance(dtype, str) or dtype not in ACCEPTED_DTYPES:
        raise InputError(f"{field}: dtype {dtype!r} is not accepted; use one of "
                         "<f2, <f4, <f8 (floats), |u1 (uint8 images), <i4, <i8 (indices)", field)
    if not isinstance(shape, (list, tuple)) or len(shape) > MAX_NDIM or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_DIM for d in shape):
        raise InputError(f"{field}: shape must be a list of at most {MAX_NDIM} integers in [0, {MAX_DIM}], got {shape!r}", field)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError(f"{field}: data must be bytes, got {type(data).__name__}", field)
    dt = np.dtype(dtype)
    expected = math.prod(shape) * dt.itemsize
    if len(data) != expected:
        raise InputError(f"{field}: shape {list(shape)} of {dtype} needs {expected} bytes, data has {len(data)}", field)
    return np.frombuffer(data, dtype=dt).reshape(shape)


def _arrays_in(obj: Any, field: str) -> Any:
    """Replace ndarray maps (at the top level of fields) by numpy arrays."""
    if isinstance(obj, dict) and obj.get("__ndarray__") is True:
        return _ndarray_from_map(obj, field)
    return obj


def decode_body(body: bytes, encoding: str) -> dict[str, Any]:
    """Bytes -> a dict of fields (msgpack ndarray maps become read-only numpy arrays)."""
    if not body:
        raise InputError("the request body is empty; send a JSON or msgpack object", None)
    try:
        if encoding == MSGPACK:
            data = msgpack.unpackb(body, raw=False, strict_map_key=True, use_list=True)
        else:
            data = json.loads(body)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, TypeError, RecursionError) as e:
        kind = "msgpack" if encoding == MSGPACK else "JSON"
        raise InputError(f"the body is not valid {kind}: {str(e)[:200]}", None) from None
    if not isinstance(data, dict):
        raise InputError(f"the body must be an object (map) of fields, got {type(data).__name__}", None)
    return {k: _arrays_in(v, k) for k, v in data.items()}


def _to_wire(value: Any, encoding: str) -> Any:
    if isinstance(value, np.ndarray):
        if encoding == MSGPACK:
            arr = np.ascontiguousarray(value)
            dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
            arr = arr.astype(dt, copy=False)
            return {"__ndarray__": True, "dtype": arr.dtype.str, "shape": list(arr.shape), "data": arr.tobytes()}
        return value.tolist()
    if isinstance(value, dict):
        return {k: _to_wire(v, encoding) for k, v in value.items()}
    return value


def encode_body(data: dict[str, Any], encoding: str) -> bytes:
    """A dict of fields (numpy arrays allowed) -> bytes in ``encoding``."""
    wire = _to_wire(data, encoding)
    if encoding == MSGPACK:
        return msgpack.packb(wire, use_bin_type=True)
    return json.dumps(wire, separators=(",", ":"), allow_nan=False).encode()


def pack_array(arr: np.ndarray) -> dict[str, Any]:
    """A numpy array as the msgpack ndarray map (for clients and tests)."""
    return _to_wire(np.asarray(arr), MSGPACK)
