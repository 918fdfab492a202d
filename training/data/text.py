"""Per-task text embeddings: ``<root>/<suite>/text/<task>.hdf5`` with dataset ``text_emb`` (E,)."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np


def text_file(root: str | Path, suite: str, task: str) -> Path:
    return Path(root) / suite / "text" / f"{task}.hdf5"


def read_text_embedding(root: str | Path, suite: str, task: str) -> tuple[np.ndarray, str | None]:
    """-> (embedding (E,) float32, the instruction stored beside it or None).

    FileNotFoundError names the file; the embedding's first token is taken if it is (L, E).
    """
    path = text_file(root, suite, task)
    if not path.is_file():
        raise FileNotFoundError(f"text embedding for task {task!r} not found: {path}")
    with h5py.File(path, "r") as f:
        emb = np.asarray(f["text_emb"], dtype=np.float32)
        instr = f.attrs.get("instruction")
    if emb.ndim == 2:
        emb = emb[0]
    if emb.ndim != 1:
        raise ValueError(f"{path}: text_emb has shape {emb.shape}, expected (E,) or (L, E)")
    return emb, (instr.decode() if isinstance(instr, bytes) else instr)
