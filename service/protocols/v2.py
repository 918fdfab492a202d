"""KServe v2 / Open Inference Protocol: the model table and the infer request and response bodies.

The models and tensors are named as ``amplify export --format triton`` names them (one Triton model
per exported graph: ``amplify_<graph>``, inputs and outputs as in the export's manifest), so one v2
client runs unchanged against ``amplify serve`` and against Triton serving the export.
``amplify_text_embed`` (BYTES ``text`` -> FP32 ``text_emb``) exists on ``amplify serve`` only.

Bodies: JSON (``data`` as flat or nested row-major lists) and the binary tensor data extension: the
JSON header's length in ``Inference-Header-Content-Length``, then each binary tensor's raw
little-endian bytes in order (``parameters.binary_data_size``); outputs go back binary when the
request asks (``parameters.binary_data_output``, or per output ``parameters.binary_data``).
"""
from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from clients.codec import V2_DATATYPES, v2_datatype, v2_tensor_entry
from service.backends.base import ModelInfo
from service.errors import InputError, PayloadTooLarge, UnsupportedMediaType

VERSION = "1"  # the export's only version directory (<model>/1/model.onnx)
PREFIX = "amplify_"
GRAPHS = ("act", "predict_codes", "encode", "decode", "indices_to_codes", "inverse_dynamics")
SERVE_ONLY = ("text_embed",)
MODEL_NAMES = tuple(PREFIX + g for g in GRAPHS + SERVE_ONLY)
HEADER_LENGTH = "inference-header-content-length"

DATATYPES = V2_DATATYPES
MAX_NDIM = 8
MAX_DIM = 1 << 24


def _paths() -> set[str]:
    out = {"/v2", "/v2/health/live", "/v2/health/ready"}
    for m in MODEL_NAMES:
        for base in (f"/v2/models/{m}", f"/v2/models/{m}/versions/{VERSION}"):
            out |= {base, f"{base}/ready", f"{base}/infer", f"{base}/config"}
    return out


V2_ENDPOINTS = _paths()  # the metrics' endpoint labels (a bounded set)


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1: the batch axis (or any size)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Model:
    name: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]

    def input(self, name: str) -> Tensor | None:
        return next((t for t in self.inputs if t.name == name), None)

    def metadata(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The v2 model metadata object."""
        meta = {"name": self.name, "versions": [VERSION], "platform": "amplify_serve",
                "inputs": [t.as_dict() for t in self.inputs], "outputs": [t.as_dict() for t in self.outputs]}
        return {**meta, **(extra or {})}

    def config(self, max_batch_size: int) -> dict[str, Any]:
        """Triton's model configuration (``GET .../config``) in its JSON form, as the export's config.pbtxt."""
        def t(x: Tensor) -> dict[str, Any]:
            return {"name": x.name, "data_type": "TYPE_STRING" if x.datatype == "BYTES" else f"TYPE_{x.datatype}",
                    "dims": list(x.shape[1:])}
        return {"name": self.name, "platform": "amplify_serve", "max_batch_size": max_batch_size,
                "input": [t(x) for x in self.inputs], "output": [t(x) for x in self.outputs],
                "dynamic_batching": {}}


def models(info: ModelInfo, act_inputs: Sequence[str], id_inputs: Sequence[str]) -> dict[str, Model]:
    """The v2 models of a loaded model, shaped as the export's manifest (batch axis -1). ``act_inputs`` and
    ``id_inputs``: the inputs of the policy and of the inverse dynamics (``()``: not served)."""
    v, (H, W), t, n = info.num_views, info.image_size, info.num_steps, info.num_tracks
    S, h, E, P = info.code_length, info.hidden_dim, info.text_embedding_dim, info.proprio_dim
    images = Tensor("images", "FP32", (-1, v, H, W, 3))
    text_emb = Tensor("text_emb", "FP32", (-1, E))
    proprio = Tensor("proprio", "FP32", (-1, P))
    codes = Tensor("codes", "FP32", (-1, S, h))
    indices = Tensor("indices", "INT64", (-1, S))
    actions = Tensor("actions", "FP32", (-1, info.action_horizon, info.action_dim))
    velocities = Tensor("velocities", "FP32", (-1, v, t, n, 2))
    by_name = {"images": images, "text_emb": text_emb, "proprio": proprio, "codes": codes}
    table = [
        Model("amplify_act", tuple(by_name[i] for i in act_inputs), (actions, indices)),
        Model("amplify_predict_codes", (images, text_emb), (indices, codes)),
        Model("amplify_encode", (velocities,), (indices, codes)),
        Model("amplify_decode", (codes,), (velocities, Tensor("logits", "FP32", (-1, v * t * n, info.num_classes)))),
        Model("amplify_indices_to_codes", (indices,), (codes,)),
        Model("amplify_text_embed", (Tensor("text", "BYTES", (-1,)),), (text_emb,)),
    ]
    if id_inputs:
        table.append(Model("amplify_inverse_dynamics", tuple(by_name[i] for i in id_inputs), (actions,)))
    return {m.name: m for m in table}


# ---------------------------------------------------------------------------------------------
# request bodies
# ---------------------------------------------------------------------------------------------
@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray | list[str]]
    outputs: list[str] | None          # requested output names in order; None: all
    binary: dict[str, bool]            # per requested output
    binary_default: bool
    parameters: dict[str, Any]


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding`` gzip or deflate (tritonclient's request compression), bounded by ``limit``."""
    enc = (encoding or "identity").strip().lower()
    if enc == "identity":
        return body
    if enc not in ("gzip", "deflate"):
        raise UnsupportedMediaType(f"Content-Encoding {enc!r} is not supported; send identity, gzip or deflate",
                                   "Content-Encoding")
    d = zlib.decompressobj(wbits=31 if enc == "gzip" else 15)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as e:
        raise InputError(f"the body is not valid {enc}: {e}", None) from None
    if len(out) > limit or d.unconsumed_tail:
        raise PayloadTooLarge(f"the decompressed body is larger than the limit of {limit} bytes", None)
    return out


def _shape(value: Any, field: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > MAX_NDIM or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_DIM for d in value):
        raise InputError(f"{field}: shape must be a list of at most {MAX_NDIM} integers in [0, {MAX_DIM}], got {value!r}",
                         field)
    return tuple(value)


def _bytes_tensor(raw: bytes, count: int, field: str) -> list[str]:
    out, pos = [], 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise InputError(f"{field}: truncated BYTES element length at byte {pos}", field)
        (size,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + size > len(raw):
            raise InputError(f"{field}: BYTES element of {size} bytes runs past the tensor's data", field)
        out.append(raw[pos:pos + size].decode("utf-8", "replace"))
        pos += size
    if len(out) != count:
        raise InputError(f"{field}: shape holds {count} elements, the BYTES data has {len(out)}", field)
    return out


def _from_json(data: Any, dtype: np.dtype, shape: tuple[int, ...], field: str) -> np.ndarray:
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError):
        raise InputError(f"{field}: data is ragged: every row must have the same length", field) from None
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise InputError(f"{field}: data must hold numbers", field)
    if dtype.kind in "iu" and arr.dtype.kind == "f":
        raise InputError(f"{field}: datatype {v2_datatype(dtype)} needs integers, the data holds fractions", field)
    if arr.size != math.prod(shape):
        raise InputError(f"{field}: shape {list(shape)} holds {math.prod(shape)} elements, data has {arr.size}", field)
    if dtype.kind in "iu" and arr.size and (arr.min() < np.iinfo(dtype).min or arr.max() > np.iinfo(dtype).max):
        raise InputError(f"{field}: values do not fit {v2_datatype(dtype)}", field)
    return arr.astype(dtype).reshape(shape)


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """An infer body (JSON, or JSON + binary tensors) -> named inputs as numpy arrays (BYTES: lists of str)."""
    if header_length is not None:
        if not header_length.strip().isdigit() or int(header_length) > len(body):
            raise InputError(f"Inference-Header-Content-Length must be an integer in [0, {len(body)}] (the body's size), "
                             f"got {header_length!r}", "Inference-Header-Content-Length")
        n = int(header_length)
        head, binary = body[:n], memoryview(body)[n:]
    else:
        head, binary = body, memoryview(b"")
    if not head:
        raise InputError("the request body is empty; send the JSON inference request", None)
    try:
        req = json.loads(head)
    except (ValueError, RecursionError) as e:
        raise InputError(f"the inference request is not valid JSON: {str(e)[:200]}", None) from None
    if not isinstance(req, dict):
        raise InputError(f"the inference request must be a JSON object, got {type(req).__name__}", None)
    raw_inputs = req.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InputError("`inputs` must be a non-empty list of tensors {name, shape, datatype, data}", "inputs")
    params = req.get("parameters") or {}
    if not isinstance(params, dict):
        raise InputError("`parameters` must be an object", "parameters")
    inputs: dict[str, Any] = {}
    offset = 0
    for i, t in enumerate(raw_inputs):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise InputError(f"inputs[{i}] must be an object with a string `name`", f"inputs[{i}]")
        name = t["name"]
        if name in inputs:
            raise InputError(f"input {name!r} is sent twice", name)
        shape = _shape(t.get("shape"), name)
        datatype = t.get("datatype")
        if datatype != "BYTES" and datatype not in DATATYPES:
            raise InputError(f"{name}: datatype must be one of {sorted(DATATYPES) + ['BYTES']}, got {datatype!r}", name)
        tp = t.get("parameters") or {}
        size = tp.get("binary_data_size") if isinstance(tp, dict) else None
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InputError(f"{name}: binary_data_size {size!r} does not fit the {len(binary) - offset} binary bytes "
                                 "left in the body", name)
            raw = bytes(binary[offset:offset + size])
            offset += size
            if datatype == "BYTES":
                inputs[name] = _bytes_tensor(raw, math.prod(shape), name)
                continue
            dt = DATATYPES[datatype]
            if len(raw) != math.prod(shape) * dt.itemsize:
                raise InputError(f"{name}: shape {list(shape)} of {datatype} needs {math.prod(shape) * dt.itemsize} bytes, "
                                 f"binary_data_size is {len(raw)}", name)
            inputs[name] = np.frombuffer(raw, dtype=dt).reshape(shape)
        else:
            if "data" not in t:
                raise InputError(f"{name}: send `data` or parameters.binary_data_size", name)
            if datatype == "BYTES":
                flat = np.asarray(t["data"], dtype=object).reshape(-1) if isinstance(t["data"], list) else None
                if flat is None or not all(isinstance(s, str) for s in flat) or flat.size != math.prod(shape):
                    raise InputError(f"{name}: BYTES data must be {math.prod(shape)} strings", name)
                inputs[name] = [str(s) for s in flat]
                continue
            inputs[name] = _from_json(t["data"], DATATYPES[datatype], shape, name)
    if offset != len(binary):
        raise InputError(f"the body has {len(binary) - offset} binary bytes that no input claims (binary_data_size)", None)
    outputs, binary_out = None, {}
    default = bool(params.get("binary_data_output", False))
    if req.get("outputs") is not None:
        if not isinstance(req["outputs"], list):
            raise InputError("`outputs` must be a list of {name[, parameters]}", "outputs")
        outputs = []
        for i, o in enumerate(req["outputs"]):
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise InputError(f"outputs[{i}] must be an object with a string `name`", f"outputs[{i}]")
            op = o.get("parameters") or {}
            outputs.append(o["name"])
            binary_out[o["name"]] = bool(op.get("binary_data", default)) if isinstance(op, dict) else default
    rid = req.get("id")
    return InferRequest(rid if isinstance(rid, str) else None, inputs, outputs, binary_out, default, params)


# ---------------------------------------------------------------------------------------------
# response bodies
# ---------------------------------------------------------------------------------------------
def encode_infer_response(model: str, request_id: str | None, outputs: list[tuple[str, np.ndarray, bool]]) -> tuple[bytes, dict[str, str]]:
    """(name, array, binary) per output -> (body, headers): JSON, or JSON + binary tensors."""
    entries, blobs = [], []
    for name, arr, binary in outputs:
        entries.append(v2_tensor_entry(name, arr, binary, blobs))
    doc: dict[str, Any] = {"model_name": model, "model_version": VERSION, "outputs": entries}
    if request_id is not None:
        doc["id"] = request_id
    head = json.dumps(doc, separators=(",", ":")).encode()
    if not blobs:
        return head, {"content-type": "application/json"}
    return b"".join([head, *blobs]), {"content-type": "application/octet-stream",
                                      "Inference-Header-Content-Length": str(len(head))}


def text_tensor(texts: Sequence[str]) -> bytes:
    """BYTES elements in the binary form: 4-byte little-endian length, then the UTF-8 bytes."""
    return b"".join(struct.pack("<I", len(b)) + b for b in (s.encode() for s in texts))
