"""Triton Inference Server model repository from exported ONNX graphs.

Layout (one Triton model per graph; the manifest and instruction table sit beside them, and Triton
ignores files at the repository's top level)::

    <out>/manifest.json, instructions.json, text_embeddings.npy
    <out>/amplify_act/config.pbtxt
    <out>/amplify_act/1/model.onnx
    ...

Each ``config.pbtxt`` names the ``onnxruntime_onnx`` platform, sets ``max_batch_size`` (so the
batch axis is implicit and ``dims`` list the per-sample shape; -1 marks any other dynamic axis) and
turns on dynamic batching.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from exporters.manifest import BATCH_AXIS

TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64",
                 "int64": "TYPE_INT64", "int32": "TYPE_INT32", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}


def _tensor(t: dict[str, Any]) -> str:
    dims = [-1 if (isinstance(d, str) or d is None) else int(d) for d in t["shape"][1:]]
    return (f'  {{\n    name: "{t["name"]}"\n    data_type: {TRITON_DTYPES[t["dtype"]]}\n'
            f'    dims: [ {", ".join(str(d) for d in dims)} ]\n  }}')


def config_pbtxt(model_name: str, graph: dict[str, Any], max_batch_size: int, max_queue_delay_us: int) -> str:
    """The text-format ModelConfig of one graph (inputs/outputs from its manifest entry)."""
    for t in graph["inputs"] + graph["outputs"]:
        if t["shape"][0] != BATCH_AXIS:
            raise ValueError(f"{model_name}: {t['name']} has no leading batch axis")
    return "\n".join([
        f'name: "{model_name}"',
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {max_batch_size}",
        "input [\n" + ",\n".join(_tensor(t) for t in graph["inputs"]) + "\n]",
        "output [\n" + ",\n".join(_tensor(t) for t in graph["outputs"]) + "\n]",
        f"dynamic_batching {{\n  max_queue_delay_microseconds: {max_queue_delay_us}\n}}",
        "",
    ])


def write_triton_configs(out: Path, manifest: dict[str, Any], settings) -> list[Path]:
    """Write ``config.pbtxt`` for every graph (and int8 variant) already laid out under ``out``."""
    written = []
    for graph in manifest["graphs"].values():
        variants = [graph] + ([graph["int8"]] if "int8" in graph else [])
        for g in variants:
            model_dir = (out / g["file"]).parent.parent  # <model>/1/model.onnx -> <model>
            text = config_pbtxt(model_dir.name, g, settings.triton_max_batch_size, settings.triton_max_queue_delay_us)
            (model_dir / "config.pbtxt").write_text(text)
            g["triton_model"] = model_dir.name
            written.append(model_dir / "config.pbtxt")
    return written
