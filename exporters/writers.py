"""Writing and running one graph per format: trace to ONNX or TorchScript, the file layout of an
export directory, and runners that call a written graph on named numpy inputs (parity, int8 timing).

Used by the exporter (``exporters.export``), the int8 pass (``exporters.quantize``) and the FD-loop
benchmark (``benchmarks.fd_step``); it imports none of them.
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from exporters.manifest import BATCH_AXIS, IMAGE_AXES

FORMATS = ("onnx", "torchscript", "triton")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the tracer's and the exporter's warnings (shape-to-int conversions, deprecations)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*(legacy|TorchScript-based) ONNX export.*")
        yield


def write_onnx(wrapper: torch.nn.Module, example: tuple[torch.Tensor, ...], path: Path, input_names: list[str],
               output_names: list[str], opset: int, output_shapes: dict[str, list[int]] | None = None) -> None:
    """Trace ``wrapper`` and write an ONNX graph with a dynamic batch axis, then ``onnx.checker`` it.

    Uses the TorchScript-based exporter (``dynamo=False``): it needs no onnxscript and exports the
    unrolled FD loop, the FSQ integer ops and a dynamic batch axis. ``output_shapes`` (per-sample
    shapes) replace output dimensions the exporter left symbolic, so the graph declares them."""
    import onnx

    with _quiet(), torch.no_grad():
        torch.onnx.export(
            wrapper, example, str(path), dynamo=False, input_names=input_names, output_names=output_names,
            opset_version=opset, do_constant_folding=True,
            dynamic_axes={n: {0: BATCH_AXIS, **(IMAGE_AXES if n == "images" else {})} for n in input_names + output_names},
        )
    if output_shapes:
        model = onnx.load(str(path))
        for out in model.graph.output:
            dims = out.type.tensor_type.shape.dim
            for d, size in zip(list(dims)[1:], output_shapes[out.name]):
                d.Clear()
                d.dim_value = int(size)
        onnx.save(model, str(path))
    onnx.checker.check_model(str(path), full_check=True)


def write_torchscript(wrapper: torch.nn.Module, example: tuple[torch.Tensor, ...], path: Path) -> None:
    """Trace ``wrapper`` and save it; it loads with ``torch.jit.load`` without this project's code."""
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(wrapper, example, check_trace=False)
        torch.jit.save(traced, str(path))


def onnx_runner(path: Path, threads: int | None = None) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """A CPU ONNX Runtime session as a function of named numpy inputs -> named outputs."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return lambda feed: dict(zip(names, sess.run(None, feed)))


def torchscript_runner(path: Path, input_names: list[str], output_names: list[str]):
    """The saved TorchScript module as a function of named numpy inputs -> named outputs."""
    module = torch.jit.load(str(path), map_location="cpu")

    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            out = module(*[torch.from_numpy(feed[n]) for n in input_names])
        out = out if isinstance(out, tuple) else (out,)
        return {n: o.numpy() for n, o in zip(output_names, out)}

    return run



def graph_file(graph: str, settings: Any, int8: bool = False) -> str:
    """Where a graph lives inside the output directory (``settings``: an ``ExportSettings``)."""
    if settings.format == "triton":
        return f"{settings.triton_prefix}{graph}{'_int8' if int8 else ''}/1/model.onnx"
    if settings.format == "torchscript":
        return f"{graph}.pt"
    return f"{graph}{'.int8' if int8 else ''}.onnx"
