"""The ONNX Runtime back end (an `amplify export --format onnx` or `--format triton` directory)."""
from __future__ import annotations

from pathlib import Path

from service.backends.exported import ExportedBackend, _check_dir


class OnnxBackend(ExportedBackend):
    name = "onnx"

    @classmethod
    def load(cls, path: str | Path | None, device: str = "cpu", threads: int | None = None) -> "OnnxBackend":
        from exporters.runtime import OnnxModel

        p = _check_dir(path, "onnx")
        return cls(OnnxModel(p, device=device, threads=threads), p, device)
