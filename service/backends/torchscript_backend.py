"""The TorchScript back end (an `amplify export --format torchscript` directory, run with torch.jit)."""
from __future__ import annotations

from pathlib import Path

from service.backends.exported import ExportedBackend, _check_dir


class TorchScriptBackend(ExportedBackend):
    name = "torchscript"

    @classmethod
    def load(cls, path: str | Path | None, device: str = "cpu", threads: int | None = None) -> "TorchScriptBackend":
        from exporters.runtime import TorchScriptModel

        p = _check_dir(path, "torchscript")
        return cls(TorchScriptModel(p, device=device, threads=threads), p, device)
