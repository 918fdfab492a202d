"""What gets exported: a bundle or a motion tokenizer, loaded from either checkpoint format."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn

from amplify.checkpoints import CheckpointError, detect_format, file_sha256, load_original, read_dir
from amplify.commands.convert import original_kind
from amplify.config import BundleConfig, MotionTokenizerConfig, to_dict
from amplify.loading import load_motion_tokenizer
from amplify.policy import AMPLIFY


@dataclass
class ExportSource:
    """A loaded model with what the manifest says about it."""

    kind: str  # "bundle" | "motion_tokenizer"
    model: nn.Module  # AMPLIFY or MotionTokenizer, in eval mode on the CPU
    path: Path
    sha256: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def mt_cfg(self) -> MotionTokenizerConfig:
        return self.model.cfg.motion_tokenizer if self.kind == "bundle" else self.model.cfg

    @property
    def config(self) -> dict[str, Any]:
        """The full model config; a tokenizer's is wrapped as ``{"motion_tokenizer": ...}``."""
        if self.kind == "bundle":
            return to_dict(self.model.cfg)
        return {"motion_tokenizer": to_dict(self.model.cfg)}


def _kind(path: Path) -> str:
    if detect_format(path) == "original":
        return original_kind(load_original(path).get("config") or {})
    doc, _ = read_dir(path)
    return doc["kind"]


def load_source(path: str | Path) -> ExportSource:
    """A bundle (original ``amplify.pt`` or project directory) or a motion tokenizer (``mt.pt`` or
    directory). Standalone FD/ID checkpoints are refused: their graphs need the vision encoder and
    the tokenizer, which only a bundle holds. Raises CheckpointError with the reason."""
    p = Path(path)
    try:
        kind = _kind(p)
    except CheckpointError:
        raise
    except Exception as e:  # the unpickler can raise anything on a damaged file; name it, don't crash
        raise CheckpointError(f"{p}: not a readable checkpoint (truncated or corrupt?): {type(e).__name__}: {e}") from None
    if kind == "bundle":
        model = AMPLIFY.load(p)
        meta = dict(model.metadata)
    elif kind == "motion_tokenizer":
        model, _ = load_motion_tokenizer(p)
        meta = dict(read_dir(p)[0].get("metadata", {})) if p.is_dir() else {}
    else:
        raise CheckpointError(
            f"{p}: holds a {kind} model alone; export a bundle instead (assemble one with "
            f"'amplify convert --mt mt.pt --fd fd.pt --id id.pt --vision-weights ... --out DIR')"
        )
    if kind == "bundle" and not isinstance(model.cfg, BundleConfig):
        raise CheckpointError(f"{p}: not a bundle")
    return ExportSource(kind=kind, model=model.eval(), path=p, sha256=file_sha256(p), metadata=meta)
