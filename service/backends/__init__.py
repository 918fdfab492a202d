"""Inference back ends behind one interface (:class:`service.backends.base.Backend`)."""
from __future__ import annotations

from service.backends.base import Backend, ModelInfo

BACKENDS = ("torch", "torchscript", "onnx")


def load_backend(name: str, model: str | None, device: str = "cpu", threads: int | None = None, seed: int = 0) -> Backend:
    """Build the named back end on ``model`` (a path; None: the default bundle, or an untrained one)."""
    if name == "torch":
        from service.backends.torch_backend import TorchBackend
        return TorchBackend.load(model, device=device, threads=threads, seed=seed)
    if name == "torchscript":
        from service.backends.torchscript_backend import TorchScriptBackend
        return TorchScriptBackend.load(model, device=device, threads=threads)
    if name == "onnx":
        from service.backends.onnx_backend import OnnxBackend
        return OnnxBackend.load(model, device=device, threads=threads)
    raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS}")


__all__ = ["Backend", "ModelInfo", "BACKENDS", "load_backend"]
