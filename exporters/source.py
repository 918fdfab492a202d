"""What gets exported: a bundle or a motion tokenizer, loaded from either checkpoint format."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn

from amplify.checkpoints import CheckpointError, file_sha256
from amplify.config import MotionTokenizerConfig, to_dict
from amplify.loading import WrongKind, load_model


@dataclass
class ExportSource:
    """A loaded model with what the manifest says about it."""

    kind: str  # "bundle" | "motion_tokenizer"
    model: nn.Module  # AMPLIFY or MotionTokenizer, in eval mode on the CPU
    path: Path
    sha256: str
    metadata: dict[str, Any] = field(default_factory=dict)
    name: str = ""  # the checkpoint's name and version (amplify.loading.model_name / model_version)
    version: str = ""

    @property
    def mt_cfg(self) -> MotionTokenizerConfig:
        return self.model.cfg.motion_tokenizer if self.kind == "bundle" else self.model.cfg

    @property
    def config(self) -> dict[str, Any]:
        """The full model config; a tokenizer's is wrapped as ``{"motion_tokenizer": ...}``."""
        if self.kind == "bundle":
            return to_dict(self.model.cfg)
        return {"motion_tokenizer": to_dict(self.model.cfg)}


def load_source(path: str | Path) -> ExportSource:
    """A bundle (original ``amplify.pt`` or project directory) or a motion tokenizer (``mt.pt`` or
    directory), read by :func:`amplify.loading.load_model`. Standalone FD/ID checkpoints are refused:
    their graphs need the vision encoder and the tokenizer, which only a bundle holds. Raises
    CheckpointError with the reason."""
    p = Path(path)
    try:
        loaded = load_model(p, kinds=("bundle", "motion_tokenizer"))
    except WrongKind as e:
        raise CheckpointError(
            f"{p}: holds a {e.kind} model alone; export a bundle instead (assemble one with "
            f"'amplify convert --mt mt.pt --fd fd.pt --id id.pt --vision-weights ... --out DIR')"
        ) from None
    return ExportSource(kind=loaded.kind, model=loaded.model.eval(), path=p, sha256=file_sha256(p),
                        metadata=loaded.metadata, name=loaded.name, version=loaded.version)
