"""Instruction text -> text embeddings (b, E): the bundle's table of known instructions first, then an
optional local sentence-transformers model directory (loaded offline, never downloaded).

A text encoder is accepted only when its embedding size equals the model's ``text_embedding_dim``;
otherwise startup fails with a clear error (e.g. all-MiniLM-L6-v2 gives 384 dims, AMPLIFY takes 512).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from amplify.inputs import UnknownInstructionError, instruction_rows
from service.errors import UnknownInstruction

log = logging.getLogger("amplify.service")


class TextEncoderError(RuntimeError):
    """A configured text encoder that cannot serve this model."""


def text_encoder_dim(model_dir: Path) -> int:
    """The sentence embedding size of a sentence-transformers directory, read from its config files."""
    pooling = model_dir / "1_Pooling" / "config.json"
    if pooling.is_file():
        return int(json.loads(pooling.read_text())["word_embedding_dimension"])
    config = model_dir / "config.json"
    if config.is_file():
        return int(json.loads(config.read_text())["hidden_size"])
    raise TextEncoderError(f"text encoder {model_dir}: no 1_Pooling/config.json or config.json found; "
                           "expected a sentence-transformers model directory")


class LocalTextEncoder:
    """A sentence-transformers model from a local directory (needs the ``text`` extra)."""

    def __init__(self, model_dir: str | Path, expected_dim: int, device: str = "cpu"):
        self.model_dir = Path(model_dir)
        if not self.model_dir.is_dir():
            raise TextEncoderError(f"text encoder directory {self.model_dir} does not exist")
        dim = text_encoder_dim(self.model_dir)
        if dim != expected_dim:
            raise TextEncoderError(
                f"text encoder {self.model_dir} gives {dim}-dim embeddings but the model takes {expected_dim}: "
                "they cannot be mapped; use an encoder of the model's size or send text_emb")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise TextEncoderError("a text encoder needs sentence-transformers: pip install -e '.[text]'") from None
        self.model = SentenceTransformer(str(self.model_dir), device=device, local_files_only=True)
        self.dim = dim

    def __call__(self, text: Sequence[str]) -> np.ndarray:
        return np.asarray(self.model.encode(list(text), convert_to_numpy=True), dtype=np.float32)


class TextResolver:
    """Looks instructions up in the model's table, then asks the text encoder (if any); else 404."""

    def __init__(self, instructions: Sequence[str], table: np.ndarray | None, encoder: LocalTextEncoder | None = None):
        self.instructions = list(instructions)
        self._table = None if table is None else np.asarray(table, dtype=np.float32)
        self.encoder = encoder

    def __call__(self, text: Sequence[str]) -> np.ndarray:
        """Instructions (b,) -> embeddings (b, E) float32."""
        try:
            return self._table[instruction_rows(self.instructions, text)].copy()
        except UnknownInstructionError as e:
            if self.encoder is not None:
                return self.encoder(text)
            missing = e.missing
        known = self.instructions[:5]
        raise UnknownInstruction(
            f"unknown instruction {missing[0]!r} and no text encoder is configured; send `text_emb` (b, E) instead"
            + (f" or one of the known instructions (GET /metadata), e.g. {known}" if known else ""), "text")
