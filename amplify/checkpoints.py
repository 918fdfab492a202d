"""Checkpoints: safe import of the original research code's files, and the project's own format.

Original files (``mt.pt``, ``fd.pt``, ``id.pt`` as the training scripts save them, ``amplify.pt``
as the bundle's ``save`` writes it) are pickles. They are read with torch's weights-only
unpickler, which builds nothing but tensors and plain containers; the one extra class they hold,
``pathlib.PosixPath`` (a path in their config), is allowed and nothing else is. A file carrying
any other object is refused with :class:`CheckpointError` before that object is built.

The project's format is a directory::

    <dir>/config.json         {"format": "amplify-serve", "format_version": 1, "kind": ..., "config": {...}, "metadata": {...}}
    <dir>/model.safetensors   the weights (no pickle at all)

``kind`` is ``motion_tokenizer``, ``forward_dynamics``, ``inverse_dynamics`` or ``bundle``.
"""
from __future__ import annotations

import hashlib
import json
import pathlib
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

FORMAT_NAME = "amplify-serve"
FORMAT_VERSION = 1
KINDS = ("motion_tokenizer", "forward_dynamics", "inverse_dynamics", "bundle")

# The only non-container class the original checkpoints hold.
_ALLOWED_GLOBALS = [pathlib.PosixPath]

# State-dict entries of original checkpoints that hold no learned state: attention-mask buffers
# (rebuilt from the config) and an unused positional-encoding buffer.
_IGNORED_SUFFIXES = (".attn_mask", ".inv_freq")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, malformed, unsafe or does not fit the model."""


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (or of every file in a directory, in name order)."""
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _plain(obj: Any) -> Any:
    """Config values as JSON-ready data (paths become strings)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, pathlib.PurePath):
        return str(obj)
    return obj


def load_original(path: str | Path) -> dict[str, Any]:
    """Read an original-format ``.pt`` file without unpickling arbitrary objects.

    Returns its top-level dict with ``config`` converted to plain JSON-ready data.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint file")
    if p.is_dir():
        raise CheckpointError(f"{p}: is a directory, not an original .pt checkpoint")
    try:
        with torch.serialization.safe_globals(_ALLOWED_GLOBALS):
            data = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{p}: refused: the file holds a pickled object that is not a tensor, a plain container or "
            f"a pathlib path, and such objects are never unpickled ({_unpickler_reason(e)})"
        ) from None
    except Exception as e:  # torch.load on arbitrary bytes raises many kinds (EOFError, IndexError, ...)
        raise CheckpointError(f"{p}: not a readable checkpoint (truncated or corrupt?): {_short(e)}") from None
    if not isinstance(data, dict) or "model" not in data:
        raise CheckpointError(f"{p}: expected a dict with a 'model' state dict, found {type(data).__name__}")
    if "config" in data:
        data["config"] = _plain(data["config"])
    return data


def _unpickler_reason(e: Exception) -> str:
    """What the weights-only unpickler refused (e.g. "Unsupported global: GLOBAL builtins.exec ..."),
    without torch's advice to retry with weights_only=False, which would run the payload."""
    m = re.search(r"WeightsUnpickler error: ([^\n]*?\.)(?:\s|$)", str(e))
    return m.group(1) if m else type(e).__name__


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:300]


def clean_original_state_dict(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Keys under ``prefix`` with the prefix removed, minus buffers that hold no learned state."""
    out = {}
    for key, value in state.items():
        if not key.startswith(prefix) or key.endswith(_IGNORED_SUFFIXES):
            continue
        out[key[len(prefix):]] = value
    return out


def load_state_into(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str, allow_missing: tuple[str, ...] = ()) -> None:
    """Strictly load ``state`` into ``module``; a mismatch names the keys and shapes."""
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.startswith(allow_missing)]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys (e.g. {unexpected[:3]})")
        if wrong:
            parts.append(f"shape mismatch: {wrong[:3]}")
        raise CheckpointError(f"{source}: weights do not fit the model its config describes: " + "; ".join(parts))
    module.load_state_dict(state, strict=False)


# ---------------------------------------------------------------------------------------------
# the project's own format
# ---------------------------------------------------------------------------------------------
def save_dir(path: str | Path, kind: str, config: dict[str, Any], state: dict[str, torch.Tensor],
             metadata: dict[str, Any] | None = None, extra_tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``<path>/config.json`` and ``<path>/model.safetensors``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    for k, v in (extra_tensors or {}).items():
        tensors[k] = v.detach().cpu().contiguous()
    save_file(tensors, str(p / "model.safetensors"))
    doc = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "kind": kind,
           "config": config, "metadata": _plain(metadata or {})}
    (p / "config.json").write_text(json.dumps(doc, indent=1))
    return p


def read_dir(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a project-format directory -> (config.json document, tensors)."""
    p = Path(path)
    cfg_file, weights = p / "config.json", p / "model.safetensors"
    if not cfg_file.is_file():
        raise CheckpointError(f"{cfg_file}: missing (a model directory holds config.json and model.safetensors)")
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing (a model directory holds config.json and model.safetensors)")
    try:
        doc = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_file}: not valid JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{cfg_file}: not an {FORMAT_NAME} model config (no 'format': '{FORMAT_NAME}')")
    if int(doc.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{cfg_file}: format_version {doc.get('format_version')} is newer than this install reads ({FORMAT_VERSION}); upgrade"
        )
    if doc.get("kind") not in KINDS:
        raise CheckpointError(f"{cfg_file}: unknown kind {doc.get('kind')!r}; expected one of {KINDS}")
    try:
        tensors = load_file(str(weights))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{weights}: not a readable safetensors file (truncated or corrupt?): {_short(e)}") from None
    return doc, dequantized(tensors)


INT8_SCALE_SUFFIX = ".int8_scale"


def stored_as_int8(key: str, tensor: torch.Tensor, prefixes: tuple[str, ...]) -> bool:
    """Whether a bundle saved with ``int8_prefixes=prefixes`` stores this state entry as per-channel int8: a
    floating-point convolution kernel (4-D) whose key starts with one of ``prefixes``."""
    return bool(prefixes) and key.startswith(prefixes) and tensor.is_floating_point() and tensor.dim() == 4


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel symmetric int8: (int8 values, float16 scale of shape (out, 1, ...)); ``q * scale``
    is the stored weight (:func:`dequantized`)."""
    amax = weight.abs().amax(dim=tuple(range(1, weight.dim())), keepdim=True)
    scale = (amax / 127).clamp_min(1e-12).to(torch.float16)
    return (weight / scale.float()).round().clamp(-127, 127).to(torch.int8), scale


def dequantized(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``tensors`` with every int8 tensor that has a ``<key>.int8_scale`` beside it turned back into float32."""
    scales = {k[: -len(INT8_SCALE_SUFFIX)]: v for k, v in tensors.items() if k.endswith(INT8_SCALE_SUFFIX)}
    if not scales:
        return tensors
    out = {k: v for k, v in tensors.items() if not k.endswith(INT8_SCALE_SUFFIX)}
    for key, scale in scales.items():
        if key not in out or out[key].dtype != torch.int8:
            raise CheckpointError(f"{key}{INT8_SCALE_SUFFIX}: a scale without the int8 tensor it scales")
        out[key] = out[key].float() * scale.float()
    return out


def detect_format(path: str | Path) -> str:
    """``'project'`` for a model directory, ``'original'`` for a .pt file; raises when neither."""
    p = Path(path)
    if p.is_dir():
        if (p / "config.json").is_file():
            return "project"
        raise CheckpointError(f"{p}: a directory without config.json is not a model")
    if p.is_file():
        return "original"
    raise CheckpointError(f"{p}: no such file or directory")
