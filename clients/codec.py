"""Request and response bodies: msgpack (arrays as ``__ndarray__`` maps) or JSON (nested lists).

Only numpy and msgpack: nothing is ever pickled or unpickled. A msgpack array is
``{"__ndarray__": True, "dtype": "<f4", "shape": [...], "data": <bytes>}`` (little-endian, C order).
"""
from __future__ import annotations

import json
from typing import Any

import msgpack
import numpy as np

MSGPACK = "application/msgpack"
JSON = "application/json"
FORMATS = {"msgpack": MSGPACK, "json": JSON}

# Response fields that hold arrays, with the dtype a JSON list becomes.
ARRAY_FIELDS: dict[str, Any] = {
    "indices": np.int64, "codes": np.float32, "velocities": np.float32, "tracks": np.float32,
    "logits": np.float32, "actions": np.float32,
}
_MAX_NDIM = 8


def _pack_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and np.little_endian is False):
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        return {"__ndarray__": True, "dtype": arr.dtype.str, "shape": list(arr.shape), "data": arr.tobytes()}
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot encode {type(obj).__name__} in msgpack")


def _unpack_hook(obj: dict) -> Any:
    if obj.get("__ndarray__") is True:
        dtype = np.dtype(obj["dtype"])
        if dtype.kind not in "fiub" or dtype.hasobject:
            raise ValueError(f"refusing ndarray of dtype {obj['dtype']!r}")
        shape = tuple(int(s) for s in obj["shape"])
        if len(shape) > _MAX_NDIM or any(s < 0 for s in shape):
            raise ValueError(f"bad ndarray shape {shape}")
        data = obj["data"]
        if len(data) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise ValueError(f"ndarray data is {len(data)} bytes, shape {shape} of {dtype} needs "
                             f"{int(np.prod(shape)) * dtype.itemsize}")
        return np.frombuffer(data, dtype=dtype).reshape(shape)
    return obj


def encode_body(payload: dict[str, Any], content_type: str) -> bytes:
    """A request body in ``content_type`` (msgpack or JSON); numpy arrays become ndarray maps or lists."""
    if content_type == MSGPACK:
        return msgpack.packb(payload, default=_pack_default, use_bin_type=True)
    return json.dumps(payload, default=_json_default, separators=(",", ":")).encode()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind == "f" and not np.isfinite(obj).all():
            # JSON has no NaN/inf (the server would refuse them anyway): say so here.
            raise ValueError("array holds non-finite values, which JSON cannot carry")
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot encode {type(obj).__name__} in JSON")


def decode_body(body: bytes, content_type: str | None) -> Any:
    """Parse a response body by its content type; array fields come back as numpy arrays."""
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype == MSGPACK:
        return msgpack.unpackb(body, object_hook=_unpack_hook, raw=False, strict_map_key=False)
    data = json.loads(body) if body else None
    if isinstance(data, dict):
        for key, dtype in ARRAY_FIELDS.items():
            if isinstance(data.get(key), list):
                data[key] = np.asarray(data[key], dtype=dtype)
    return data
