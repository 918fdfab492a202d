"""The manifest of an exported model directory (``manifest.json``): read, write, check.

Only the standard library and numpy here: servers read manifests without torch. The format is
documented field by field in ``docs/exporters.md``; ``FORMAT_VERSION`` changes only when a field
changes meaning or disappears (new fields may appear at any time; readers ignore unknown keys).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "amplify-export"
# 2: graphs take images of any height and width (``images`` shape [batch, v, "height", "width", 3])
# and resize them once, inside, to the vision encoder's size; version 1 graphs took ``image_size`` only.
FORMAT_VERSION = 2
RUNTIMES = ("onnx", "torchscript", "triton")
BATCH_AXIS = "batch"  # the name of the dynamic batch axis in every shape
IMAGE_AXES = {2: "height", 3: "width"}  # the dynamic image axes of ``images`` (b, v, H, W, 3)
INSTRUCTIONS_FILE = "instructions.json"
TEXT_EMBEDDINGS_FILE = "text_embeddings.npy"


class ManifestError(ValueError):
    """A directory that is not a readable exported model."""


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of exported model directory ``path`` (checked for format and required keys)."""
    p = Path(path)
    f = p / MANIFEST_NAME if p.is_dir() else p
    if not f.is_file():
        raise ManifestError(f"{f}: missing; an exported model directory holds {MANIFEST_NAME} (write one with 'amplify export')")
    try:
        doc = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise ManifestError(f"{f}: not valid JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise ManifestError(f"{f}: not an {FORMAT_NAME} manifest (no 'format': '{FORMAT_NAME}')")
    if int(doc.get("format_version", 0)) > FORMAT_VERSION:
        raise ManifestError(f"{f}: format_version {doc.get('format_version')} is newer than this install reads ({FORMAT_VERSION})")
    missing = [k for k in ("runtime", "model", "metadata", "config", "graphs") if k not in doc]
    if missing:
        raise ManifestError(f"{f}: missing keys {missing}")
    for name, g in doc["graphs"].items():
        for key in ("file", "inputs", "outputs"):
            if key not in g:
                raise ManifestError(f"{f}: graph {name!r} has no {key!r}")
    return doc


def write_manifest(path: str | Path, doc: dict[str, Any]) -> Path:
    """Write ``doc`` as ``<path>/manifest.json``."""
    f = Path(path) / MANIFEST_NAME
    f.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    return f


def read_instructions(path: str | Path, manifest: dict[str, Any]) -> tuple[list[str], np.ndarray]:
    """The instruction table of an exported model: (instructions (n,), embeddings (n, E) float32).

    Stored as a JSON list and a ``.npy`` array (read with ``allow_pickle=False``)."""
    table = manifest.get("instructions") or {}
    p = Path(path)
    names_file, emb_file = table.get("file"), table.get("embeddings")
    if not names_file or not emb_file:
        return [], np.zeros((0, int(manifest["metadata"].get("text_embedding_dim") or 0)), np.float32)
    names = json.loads((p / names_file).read_text())
    emb = np.load(p / emb_file, allow_pickle=False).astype(np.float32, copy=False)
    if emb.ndim != 2 or emb.shape[0] != len(names):
        raise ManifestError(f"{p / emb_file}: shape {emb.shape} does not match {len(names)} instructions")
    return list(names), emb
