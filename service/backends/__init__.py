"""Inference back ends behind one interface (:class:`service.backends.base.Backend`)."""
from __future__ import annotations

from service.backends.base import Backend, ModelInfo

BACKENDS = ("torch", "torchscript", "onnx")


def load_backend(name: str, model: str | None, device: str = "cpu", threads: int | None = None, seed: int = 0,
                 precision: str = "fp32") -> Backend:
    """Build the named back end on ``model`` (a path; None: the default bundle, or an untrained one).

    ``precision`` "bf16" or "bf16-all" is the torch back end's (an exported graph's precision is fixed when exporting);
    ``device`` is checked first (:func:`amplify.devices.check_device`)."""
    from amplify.devices import check_device
    from amplify.inference import precision_name

    device = check_device(device)
    precision = precision_name(precision)
    if name == "torch":
        from service.backends.torch_backend import TorchBackend
        return TorchBackend.load(model, device=device, threads=threads, seed=seed, precision=precision)
    if name in BACKENDS and precision != "fp32":
        raise ValueError(f"precision {precision} is served by the torch back end; the {name} back end runs the exported "
                         f"graph's own precision (use --backend torch --precision {precision}, or export int8 for onnx)")
    if name == "torchscript":
        from service.backends.torchscript_backend import TorchScriptBackend
        return TorchScriptBackend.load(model, device=device, threads=threads)
    if name == "onnx":
        from service.backends.onnx_backend import OnnxBackend
        return OnnxBackend.load(model, device=device, threads=threads)
    raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS}")


__all__ = ["Backend", "ModelInfo", "BACKENDS", "load_backend"]
