"""The wire format, one codec for both sides: the clients encode requests and decode responses with
it, and the service (``service/codecs.py``) decodes requests and encodes responses with it.

Bodies are msgpack (``application/msgpack``) or JSON (``application/json``). A msgpack array is the
map ``{"__ndarray__": True, "dtype": "<f4", "shape": [...], "data": <bytes>}`` (little-endian, C
order), decoded with ``numpy.frombuffer`` after the dtype is checked against :data:`ACCEPTED_DTYPES`
and the shape against the byte count; a JSON array is nested lists. Only numpy and msgpack:
nothing is ever pickled or unpickled. A body or array that breaks these rules raises
:class:`WireError` naming the field.
"""
from __future__ import annotations

import json
import math
from typing import Any

import msgpack
import numpy as np

MSGPACK = "application/msgpack"
JSON = "application/json"
FORMATS = {"msgpack": MSGPACK, "json": JSON}
MSGPACK_ALIASES = {"application/msgpack", "application/x-msgpack", "application/vnd.msgpack"}

# Accepted little-endian dtypes of msgpack arrays ("|u1" is how numpy spells uint8).
ACCEPTED_DTYPES = {"<f2", "<f4", "<f8", "|u1", "<u1", "u1", "<i4", "<i8"}
MAX_NDIM = 8
MAX_DIM = 1 << 24

# Response fields that hold arrays, with the dtype a JSON list becomes.
ARRAY_FIELDS: dict[str, Any] = {
    "indices": np.int64, "codes": np.float32, "velocities": np.float32, "tracks": np.float32,
    "logits": np.float32, "actions": np.float32,
}


class WireError(ValueError):
    """A body or array that is not valid on the wire; ``field`` names the field (None: the whole body)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


def body_format(content_type: str | None) -> str | None:
    """``MSGPACK`` or ``JSON`` for a ``Content-Type`` (an empty one is JSON); None for anything else."""
    base = (content_type or "").split(";")[0].strip().lower()
    if base in ("", JSON) or base.endswith("+json"):
        return JSON
    if base in MSGPACK_ALIASES:
        return MSGPACK
    return None


# -- arrays ------------------------------------------------------------------------------------
def pack_array(arr: np.ndarray) -> dict[str, Any]:
    """A numpy array as the msgpack ndarray map (little-endian, C order)."""
    arr = np.ascontiguousarray(arr)
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and not np.little_endian):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return {"__ndarray__": True, "dtype": arr.dtype.str, "shape": list(arr.shape), "data": arr.tobytes()}


def unpack_array(obj: dict[str, Any], field: str) -> np.ndarray:
    """An ndarray map -> a read-only numpy array (zero copy); :class:`WireError` names what is wrong."""
    dtype, shape, data = obj.get("dtype"), obj.get("shape"), obj.get("data")
    if not isinstance(dtype, str) or dtype not in ACCEPTED_DTYPES:
        raise WireError(f"{field}: dtype {dtype!r} is not accepted (refusing it); use one of "
                        "<f2, <f4, <f8 (floats), |u1 (uint8 images), <i4, <i8 (indices)", field)
    if not isinstance(shape, (list, tuple)) or len(shape) > MAX_NDIM or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_DIM for d in shape):
        raise WireError(f"{field}: shape must be a list of at most {MAX_NDIM} integers in [0, {MAX_DIM}], got {shape!r}",
                        field)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError(f"{field}: data must be bytes, got {type(data).__name__}", field)
    dt = np.dtype(dtype)
    expected = math.prod(shape) * dt.itemsize
    if len(data) != expected:
        raise WireError(f"{field}: shape {list(shape)} of {dtype} needs {expected} bytes, data has {len(data)}", field)
    return np.frombuffer(data, dtype=dt).reshape(shape)


def _is_array_map(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("__ndarray__") is True


# -- bodies ------------------------------------------------------------------------------------
def _to_wire(value: Any, fmt: str) -> Any:
    if isinstance(value, np.ndarray):
        if fmt == MSGPACK:
            return pack_array(value)
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            # JSON has no NaN/inf (the server refuses them anyway): say so here.
            raise ValueError("array holds non-finite values, which JSON cannot carry")
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _to_wire(v, fmt) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_wire(v, fmt) for v in value]
    return value


def encode_body(payload: dict[str, Any], content_type: str) -> bytes:
    """A dict of fields (numpy arrays anywhere in it) -> bytes in ``content_type`` (msgpack or JSON)."""
    wire = _to_wire(payload, content_type)
    if content_type == MSGPACK:
        return msgpack.packb(wire, use_bin_type=True)
    return json.dumps(wire, separators=(",", ":"), allow_nan=False).encode()


def parse_body(body: bytes, content_type: str) -> Any:
    """Bytes -> the parsed document, ndarray maps at the top level of an object as numpy arrays.

    ``content_type`` is ``MSGPACK`` or ``JSON``; :class:`WireError` when the bytes are not valid."""
    try:
        if content_type == MSGPACK:
            data = msgpack.unpackb(body, raw=False, strict_map_key=True, use_list=True)
        else:
            data = json.loads(body)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, TypeError, RecursionError) as e:
        kind = "msgpack" if content_type == MSGPACK else "JSON"
        raise WireError(f"the body is not valid {kind}: {str(e)[:200]}", None) from None
    if isinstance(data, dict):
        return {k: unpack_array(v, k) if _is_array_map(v) else v for k, v in data.items()}
    return data


def decode_body(body: bytes, content_type: str | None) -> Any:
    """A response body by its content type (the clients' side): array fields come back as numpy
    arrays (msgpack ndarray maps, and the JSON lists of :data:`ARRAY_FIELDS`)."""
    fmt = MSGPACK if body_format(content_type) == MSGPACK else JSON
    if not body:
        return None
    data = parse_body(body, fmt)
    if fmt == JSON and isinstance(data, dict):
        for key, dtype in ARRAY_FIELDS.items():
            if isinstance(data.get(key), list):
                data[key] = np.asarray(data[key], dtype=dtype)
    return data


# -- openpi's msgpack-numpy (its WebSocket policy protocol; clients.openpi and service.protocols.openpi) --
# Arrays are maps with msgpack *bin* keys {b"__ndarray__": True, b"data", b"dtype", b"shape"}, numpy
# scalars {b"__npgeneric__": True, b"data", b"dtype"} (openpi_client.msgpack_numpy's layout). Decoding
# checks them as :func:`unpack_array` does: accepted dtypes, the shape against the byte count.
def pack_openpi_array(arr: np.ndarray) -> dict[bytes, Any]:
    """A numpy array as openpi's ndarray map (little-endian, C order)."""
    wire = pack_array(arr)
    return {b"__ndarray__": True, b"data": wire["data"], b"dtype": wire["dtype"], b"shape": wire["shape"]}


def is_openpi_array(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get(b"__ndarray__") is True


def unpack_openpi_array(obj: dict[bytes, Any], field: str) -> np.ndarray:
    """openpi's ndarray map -> a read-only numpy array; :class:`WireError` names what is wrong."""
    dtype = obj.get(b"dtype")
    return unpack_array({"dtype": dtype.decode("ascii", "replace") if isinstance(dtype, bytes) else dtype,
                         "shape": obj.get(b"shape"), "data": obj.get(b"data")}, field)


def unpack_openpi_scalar(obj: dict[bytes, Any], field: str) -> bool | int | float:
    """openpi's numpy scalar map -> a Python number (numbers only)."""
    dtype, data = obj.get(b"dtype"), obj.get(b"data")
    try:
        kind = np.dtype(dtype.decode("ascii", "replace") if isinstance(dtype, bytes) else str(dtype)).kind
    except TypeError:
        kind = "?"
    if kind not in "biuf" or not isinstance(data, (bool, int, float)):
        raise WireError(f"{field}: numpy scalar of dtype {dtype!r} is not accepted (numbers only)", field)
    return data


def _openpi_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return pack_openpi_array(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot encode {type(obj).__name__} in msgpack")


def encode_openpi(obj: Any) -> bytes:
    """A frame of openpi's protocol (numpy arrays anywhere in ``obj``) -> msgpack bytes."""
    return msgpack.packb(obj, default=_openpi_default, use_bin_type=True)


def decode_openpi(frame: bytes) -> Any:
    """A frame of openpi's protocol -> the document, openpi ndarray maps anywhere in it as numpy arrays
    (the clients' side; the service checks field by field, :mod:`service.protocols.openpi`)."""
    def hook(obj: dict) -> Any:
        return unpack_openpi_array(obj, "frame") if is_openpi_array(obj) else obj
    try:
        return msgpack.unpackb(frame, object_hook=hook, raw=False, strict_map_key=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, TypeError, RecursionError) as e:
        if isinstance(e, WireError):
            raise
        raise WireError(f"the frame is not valid msgpack: {str(e)[:200]}", None) from None


# ---------------------------------------------------------------------------------------------
# KServe v2 / Open Inference Protocol tensors (clients/v2.py and service/protocols/v2.py)
# ---------------------------------------------------------------------------------------------
V2_DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(bool), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"), "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}
_V2_BY_KIND = {v.str: k for k, v in V2_DATATYPES.items()}


def v2_datatype(dtype: np.dtype) -> str:
    """A numpy dtype's v2 datatype name (``FP32``, ``UINT8``, ...); KeyError for one v2 has not."""
    return _V2_BY_KIND[dtype.newbyteorder("<").str if dtype.byteorder == ">" else dtype.str]


def v2_tensor_entry(name: str, arr: np.ndarray, binary: bool, blobs: list[bytes]) -> dict[str, Any]:
    """One v2 tensor's JSON entry; with ``binary`` its little-endian bytes go to ``blobs`` instead
    (the binary tensor extension's ``binary_data_size``)."""
    a = np.ascontiguousarray(arr)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    entry: dict[str, Any] = {"name": name, "datatype": v2_datatype(a.dtype), "shape": list(a.shape)}
    if binary:
        blob = a.tobytes()
        entry["parameters"] = {"binary_data_size": len(blob)}
        blobs.append(blob)
    else:
        entry["data"] = a.reshape(-1).tolist()
    return entry
