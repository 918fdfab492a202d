"""int8 variants of exported ONNX graphs for CPU deployment (opt-in, ``--int8``).

``onnxruntime.quantization.quantize_dynamic``: weights of MatMul/Gemm (and the other ops it
supports) stored as int8, activations quantized on the fly. Quantization changes the numbers, so
nothing is asserted: the latency at batch 1 and the differences from the float32 graph on the
parity inputs are measured and written to the manifest for the user to judge.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from exporters.writers import graph_file, onnx_runner

# Ops quantized: the transformers' matrix products. Convolutions (the ResNet) stay float32; the
# measurement behind that choice is in docs/exporters.md.
OP_TYPES = ["MatMul", "Gemm"]


def median_ms(fn: Callable[[], Any], runs: int) -> float:
    """Median wall time of ``fn`` over ``runs`` calls, after two warm-up calls, in milliseconds."""
    fn()
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def differences(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per output: max/mean abs difference for floats, the fraction of equal values for integers."""
    out: dict[str, Any] = {}
    for name, r in ref.items():
        g = got[name]
        if r.dtype.kind in "iub":
            out[name] = {"fraction_equal": float((r == g).mean()), "num_differing": int((r != g).sum()), "size": int(r.size)}
        else:
            d = np.abs(r.astype(np.float64) - g.astype(np.float64))
            out[name] = {"max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean())}
    return out


def quantize_graphs(out: Path, manifest: dict[str, Any], inputs: dict[str, dict[int, dict[str, np.ndarray]]],
                    settings, log: Callable[[str], None]) -> dict[str, Any]:
    """Write ``<graph>.int8.onnx`` next to each float32 graph, record files in ``manifest['graphs']``
    and return the int8 section: method, per-graph latency (float32 vs int8, batch 1) and differences."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic


    report: dict[str, Any] = {
        "method": "onnxruntime.quantization.quantize_dynamic, int8 weights (QInt8, per tensor), "
                  f"dynamic activation quantization, ops {OP_TYPES}",
        "latency": f"median of {settings.timing_runs} runs at batch 1, ONNX Runtime CPU provider, "
                   f"{__import__('torch').get_num_threads()} intra-op thread(s), in ms",
        "graphs": {},
    }
    for graph, entry in manifest["graphs"].items():
        src = out / entry["file"]
        rel = graph_file(graph, settings, int8=True)
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # quantize_dynamic logs a pre-processing hint on the root logger
        try:
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=OP_TYPES)
        finally:
            root.setLevel(level)
        entry["int8"] = {"file": rel, "bytes": dst.stat().st_size,
                         "inputs": entry["inputs"], "outputs": entry["outputs"]}
        import torch

        threads = torch.get_num_threads()
        f32, i8 = onnx_runner(src, threads), onnx_runner(dst, threads)
        batches = sorted(inputs[graph])
        diffs = {str(b): differences(f32(inputs[graph][b]), i8(inputs[graph][b])) for b in batches}
        one = inputs[graph][batches[0]]
        if batches[0] != 1:
            one = {k: v[:1] for k, v in one.items()}
        t32 = median_ms(lambda f=f32, x=one: f(x), settings.timing_runs)
        t8 = median_ms(lambda f=i8, x=one: f(x), settings.timing_runs)
        report["graphs"][graph] = {
            "latency_ms": {"float32": round(t32, 3), "int8": round(t8, 3)}, "speedup": round(t32 / t8, 3),
            "bytes": {"float32": entry["bytes"], "int8": dst.stat().st_size},
            "differences_from_float32": diffs,
        }
        log(f"{graph:<17} int8 {rel:<40} {dst.stat().st_size / 1e6:8.2f} MB  {t32:7.2f} ms -> {t8:7.2f} ms "
            f"diff {diffs[str(batches[-1])]}")
    return report
