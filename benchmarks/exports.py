"""Exported copies of the benchmarked bundle (ONNX float32 + int8, TorchScript), made once and cached."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def ensure_export(bundle: str | Path, out: str | Path, fmt: str, int8: bool = False, threads: int = 2) -> Path:
    """``amplify export --format fmt --graphs act`` of ``bundle`` into ``out``, unless ``out`` already holds
    an export of the same checkpoint (same sha256, with int8 graphs when asked)."""
    from exporters.export import ExportSettings, export_model
    from exporters.source import load_source

    out = Path(out)
    source = load_source(bundle)
    manifest = out / "manifest.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        if m["model"].get("source_sha256") == source.sha256 and "act" in m["graphs"] and (
                not int8 or "int8" in m["graphs"]["act"]):
            print(f"reusing {fmt} export {out}", flush=True)
            return out
    print(f"exporting {bundle} as {fmt}{' (+int8)' if int8 else ''} -> {out}", flush=True)
    settings = ExportSettings(format=fmt, graphs=["act"], int8=int8, threads=threads, timing_runs=1, batch_sizes=[1])
    export_model(source, out, settings, log=lambda s: print("  " + s, flush=True))
    return out


def load_backends(onnx_dir: Path | None, ts_dir: Path | None, threads: int, device: str = "cpu") -> dict[str, Any]:
    """Runtime models keyed by back-end name: torchscript, onnxruntime_float32 (and with intra-op threads that
    sleep instead of spinning: onnxruntime_float32_nospin), onnxruntime_int8."""
    from exporters.runtime import OnnxModel, TorchScriptModel

    out: dict[str, Any] = {}
    if ts_dir:
        out["torchscript"] = TorchScriptModel(ts_dir, device=device, threads=threads)
    if onnx_dir:
        out["onnxruntime_float32"] = OnnxModel(onnx_dir, device=device, threads=threads)
        out["onnxruntime_float32_nospin"] = OnnxModel(onnx_dir, device=device, threads=threads, spin=False)
        if "int8" in out["onnxruntime_float32"].graphs["act"]:
            out["onnxruntime_int8"] = OnnxModel(onnx_dir, device=device, precision="int8", threads=threads)
    return out


def act_fn(model: Any, x: dict[str, np.ndarray]):
    """A zero-argument ``act`` call of an exported model on benchmark inputs ``x``."""
    return lambda: model.act(x["images"], x["proprio"], text_emb=x["text_emb"])
