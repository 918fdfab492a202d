"""Export a bundle or motion tokenizer to a self-describing directory of graphs (ONNX, TorchScript
or a Triton model repository), check parity against PyTorch, and write ``manifest.json``.

    source = load_source("amplify.pt")
    manifest = export_model(source, "exported/", ExportSettings(format="onnx", int8=True))
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import amplify
from amplify.checkpoints import file_sha256
from amplify.info import ModelInfo
from exporters.graphs import GRAPHS, build_graph
from exporters.manifest import (
    BATCH_AXIS, FORMAT_NAME, FORMAT_VERSION, IMAGE_AXES, INSTRUCTIONS_FILE, MANIFEST_NAME, TEXT_EMBEDDINGS_FILE,
    write_manifest,
)
from exporters.parity import ParityError, compare, reference_outputs, sample_inputs
from exporters.source import ExportSource
from exporters.writers import FORMATS, graph_file, onnx_runner, torchscript_runner, write_onnx, write_torchscript

IMAGE_NOTE = (
    "float32 (b, v, H, W, 3) in [0, 1], upright, views in metadata order, any H x W (the model was trained on "
    "metadata.image_size); inside the graph each view is resized once, bilinearly (align_corners=False, no "
    "antialiasing), to the vision encoder's {size}x{size} and goes into ResNet-18 without mean/std "
    "normalization, as the library does. Convert uint8 images with x / 255; do not resize them first."
)


class ExportError(RuntimeError):
    """An export that cannot be made (bad settings, an unsupported model)."""


@dataclass
class ExportSettings:
    """What ``amplify export`` does; every field is a ``key=value`` override on the command line."""

    format: str = "onnx"  # onnx | torchscript | triton
    graphs: list[str] = field(default_factory=list)  # empty: every graph the model has
    opset: int = 17
    int8: bool = False  # ONNX/Triton: also write dynamically quantized int8 graphs
    topk: bool = False  # also export predict_codes_topk and act_topk (top-k sampling from caller noise)
    batch_sizes: list[int] = field(default_factory=lambda: [1, 3])  # parity is checked at each
    atol: float = 1e-4  # parity: float outputs within this absolute difference; integers exact
    seed: int = 0  # parity inputs
    name: str = ""  # model name in the manifest (default: the checkpoint's metadata or file name)
    timing_runs: int = 20  # int8 latency: median of this many runs at batch 1
    triton_prefix: str = "amplify_"
    triton_max_batch_size: int = 32
    triton_max_queue_delay_us: int = 2000
    threads: int = 0  # torch / ONNX Runtime intra-op threads while exporting (0: torch's default)

    def check(self) -> None:
        if self.format not in FORMATS:
            raise ExportError(f"format must be one of {FORMATS}, got {self.format!r}")
        unknown = [g for g in self.graphs if g not in GRAPHS]
        if unknown:
            raise ExportError(f"unknown graphs {unknown}; choose from {list(GRAPHS)}")
        if self.int8 and self.format == "torchscript":
            raise ExportError("int8 is for ONNX graphs (--format onnx or triton)")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ExportError(f"batch_sizes must be positive, got {self.batch_sizes}")


# ---------------------------------------------------------------------------------------------
# the export
# ---------------------------------------------------------------------------------------------
def available_graphs(source: ExportSource) -> list[str]:
    """Graphs a source can export: every graph for a bundle, the tokenizer's for a tokenizer."""
    return [g for g, spec in GRAPHS.items() if source.kind == "bundle" or not spec.needs_bundle]


def default_graphs(source: ExportSource, settings: ExportSettings) -> list[str]:
    """What an export holds unless ``graphs`` names a subset: the non-optional graphs, plus the
    top-k ones with ``topk``."""
    return [g for g in available_graphs(source) if not GRAPHS[g].optional or settings.topk]


def _io(names: list[str], arrays: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    def shape(n: str) -> list[int | str]:
        dims: list[int | str] = [BATCH_AXIS, *arrays[n].shape[1:]]
        if n == "images":
            for axis, name in IMAGE_AXES.items():
                dims[axis] = name
        return dims

    return [{"name": n, "dtype": str(arrays[n].dtype), "shape": shape(n)} for n in names]


def _versions(opset: int | None) -> dict[str, Any]:
    v: dict[str, Any] = {"amplify_serve": amplify.__version__, "torch": torch.__version__, "numpy": np.__version__,
                         "python": platform.python_version()}
    try:
        import onnx
        import onnxruntime
        v.update(onnx=onnx.__version__, onnxruntime=onnxruntime.__version__, opset=opset)
    except ImportError:
        pass
    return v


def _write_instructions(source: ExportSource, out: Path) -> tuple[list[str], dict[str, Any]]:
    if source.kind == "bundle":
        names = list(source.model.instructions)
        emb = source.model.text_table.detach().cpu().numpy().astype(np.float32)
        dim = source.model.cfg.forward_dynamics.text_embed_dim
    else:
        names, emb, dim = [], np.zeros((0, 0), np.float32), 0
    (out / INSTRUCTIONS_FILE).write_text(json.dumps(names))
    np.save(out / TEXT_EMBEDDINGS_FILE, emb.reshape(len(names), dim), allow_pickle=False)
    return names, {"file": INSTRUCTIONS_FILE, "embeddings": TEXT_EMBEDDINGS_FILE, "count": len(names), "dim": dim}


def export_model(source: ExportSource, out: str | Path, settings: ExportSettings | None = None,
                 log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Export ``source`` into directory ``out``; returns the manifest written there.

    Raises ExportError for settings the model cannot take and ParityError (after writing
    ``parity_report.json`` and no manifest) when a graph's outputs differ from PyTorch."""
    settings = settings or ExportSettings()
    settings.check()
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    started = time.perf_counter()
    graphs = settings.graphs or default_graphs(source, settings)
    missing = [g for g in graphs if g not in available_graphs(source)]
    if missing:
        raise ExportError(f"a {source.kind} has no {missing} graphs; it exports {available_graphs(source)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in (MANIFEST_NAME, "parity_report.json"):
        (out / stale).unlink(missing_ok=True)

    entries: dict[str, dict[str, Any]] = {}
    parity: dict[str, Any] = {}
    failures: list[dict[str, Any]] = []
    per_graph_inputs: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    for graph in graphs:
        spec = GRAPHS[graph]
        try:
            wrapper = build_graph(graph, source.model)
        except (ValueError, TypeError) as e:
            raise ExportError(f"graph {graph!r}: {e}") from None
        in_names, out_names = list(wrapper.input_names), list(spec.outputs)
        cases = {}  # batch -> (numpy inputs, reference outputs)
        for b in settings.batch_sizes:
            inputs = sample_inputs(source, tuple(in_names), b, settings.seed)
            cases[b] = ({k: v.numpy() for k, v in inputs.items()}, reference_outputs(source, graph, inputs))
        feed, expected = cases[settings.batch_sizes[-1]]
        t0 = time.perf_counter()  # export_seconds: trace, convert, write and check the graph
        example = tuple(sample_inputs(source, tuple(in_names), 2, settings.seed + 1).values())
        rel = graph_file(graph, settings)
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if settings.format == "torchscript":
            write_torchscript(wrapper, example, path)
            runner = torchscript_runner(path, in_names, out_names)
        else:
            write_onnx(wrapper, example, path, in_names, out_names, settings.opset,
                       output_shapes={n: list(expected[n].shape[1:]) for n in out_names})
            runner = onnx_runner(path, threads=torch.get_num_threads())
        export_s = time.perf_counter() - t0

        parity[graph] = {}
        per_graph_inputs[graph] = {}
        for b, (feed_b, expected_b) in cases.items():
            diffs, bad = compare(graph, b, expected_b, runner(feed_b), settings.atol)
            parity[graph][str(b)] = diffs
            failures += bad
            per_graph_inputs[graph][b] = feed_b
        entries[graph] = {
            "file": rel, "doc": spec.doc, "inputs": _io(in_names, feed), "outputs": _io(out_names, expected),
            "bytes": path.stat().st_size, "sha256": file_sha256(path), "export_seconds": round(export_s, 3),
        }
        log(f"{graph:<17} {rel:<40} {path.stat().st_size / 1e6:8.2f} MB  {export_s:6.1f} s  "
            f"parity {json.dumps(parity[graph][str(settings.batch_sizes[-1])])}")

    parity_doc = {
        "reference": "PyTorch eager (the amplify library's public methods) on the same inputs",
        "inputs": "seeded random: images U[0,1], text_emb N(0,1), proprio N(0,0.5^2), velocities of U[-1,1] tracks, "
                  "indices U{0..codebook_size-1}",
        "tolerance": {"float_abs": settings.atol, "integer": "exact"}, "batch_sizes": settings.batch_sizes,
        "seed": settings.seed, "passed": not failures, "max_abs_diff": parity,
    }
    if failures:
        (out / "parity_report.json").write_text(json.dumps({**parity_doc, "failures": failures}, indent=1))
        raise ParityError(failures)

    instructions, table = _write_instructions(source, out)
    name = settings.name or source.name
    manifest: dict[str, Any] = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "runtime": settings.format,
        "model": {"name": name, "version": source.version,
                  "kind": source.kind, "source": str(source.path), "source_sha256": source.sha256,
                  "trained": source.metadata.get("trained")},
        "metadata": ModelInfo.from_config(source.model.cfg, instructions).as_manifest(),
        "images": IMAGE_NOTE.format(size=source.model.cfg.vision.image_size) if source.kind == "bundle" else None,
        "sampling": ["argmax"] + (["topk"] if "predict_codes_topk" in entries or "act_topk" in entries else []),
        "instructions": table,
        "graphs": entries,
        "config": source.config,
        "versions": _versions(settings.opset if settings.format != "torchscript" else None),
        "export": {"created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "exporter": ("torch.jit.trace" if settings.format == "torchscript"
                                else f"torch.onnx.export(dynamo=False), opset {settings.opset}"),
                   "settings": asdict(settings)},
        "parity": parity_doc,
    }
    if settings.int8:
        from exporters.quantize import quantize_graphs

        manifest["int8"] = quantize_graphs(out, manifest, per_graph_inputs, settings, log)
    if settings.format == "triton":
        from exporters.triton import write_triton_configs

        write_triton_configs(out, manifest, settings)
    manifest["export"]["seconds"] = round(time.perf_counter() - started, 2)
    write_manifest(out, manifest)
    return manifest
