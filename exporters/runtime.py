"""Run an exported model directory on numpy arrays: ONNX Runtime or TorchScript, no project code.

    from exporters.runtime import load_exported
    model = load_exported("exported/")                  # OnnxModel or TorchScriptModel, by the manifest
    actions = model.act(images, proprio, text_emb=emb)  # (b, A, action_dim) float32
    indices, codes = model.encode(tracks=tracks)        # (b, S) int64, (b, S, h) float32

This module imports numpy, onnxruntime (ONNX) or torch (TorchScript), the manifest reader and the
library's torch-free input conventions (``amplify.inputs``) only: a server can use it without the
exporter, the model library or torch. Inputs are checked against the
manifest; a wrong shape or dtype raises ``InputError`` naming the field, the expected and the
received shape. Images may be uint8 (0-255) or float (0-1), of any size (the graphs resize them
once, to the vision encoder's size; exports older than manifest format 2 take ``image_size`` only).
Prediction is argmax; exports made with ``--topk`` also sample top-k (``sampling='topk', seed=``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from amplify.inputs import InputError, instruction_rows, integrate_velocities, unit_images
from exporters.manifest import BATCH_AXIS, ManifestError, read_instructions, read_manifest

__all__ = ["ExportedModel", "InputError", "OnnxModel", "TorchScriptModel", "integrate_velocities", "load_exported",
           "select_providers"]


def _input_error(field: str, message: str) -> InputError:
    """The library's one :class:`~amplify.inputs.InputError`, its message led by the field's name."""
    return InputError(f"{field}: {message}", field)


def select_providers(device: str = "cpu", available: Sequence[str] | None = None) -> list[str]:
    """ONNX Runtime execution providers for ``device`` ('cpu', 'cuda', 'cuda:N' or 'auto').

    'cuda' needs the CUDA provider (``pip install onnxruntime-gpu``, the ``gpu`` extra) and raises a
    clear error without it; 'auto' takes CUDA when present, else the CPU."""
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    dev = device.lower()
    if dev == "cpu":
        return ["CPUExecutionProvider"]
    has_cuda = "CUDAExecutionProvider" in available
    if dev == "auto":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"] if has_cuda else ["CPUExecutionProvider"]
    if dev.startswith("cuda"):
        if not has_cuda:
            raise RuntimeError(
                f"device {device!r}: ONNX Runtime has no CUDAExecutionProvider here (available: {list(available)}); "
                "install onnxruntime-gpu (pip install 'amplify-serve[gpu]') or use device='cpu'"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")


def _provider_options(providers: list[str], device: str) -> list[Any]:
    out: list[Any] = []
    for p in providers:
        if p == "CUDAExecutionProvider" and ":" in device:
            out.append((p, {"device_id": int(device.split(":", 1)[1])}))
        else:
            out.append(p)
    return out


class ExportedModel:
    """What both runtimes share: the manifest, the instruction table, input checks, and the
    entry points built on ``_run(graph, feed) -> outputs``."""

    runtime = ""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.manifest: dict[str, Any] = read_manifest(self.path)
        self.metadata: dict[str, Any] = self.manifest["metadata"]
        self.graphs: dict[str, dict[str, Any]] = self.manifest["graphs"]
        self.instructions, self._text_table = read_instructions(self.path, self.manifest)

    # -- helpers -------------------------------------------------------------------------------
    def has(self, graph: str) -> bool:
        """Whether the export holds ``graph`` (a tokenizer-only export has no bundle graphs)."""
        return graph in self.graphs

    def _run(self, graph: str, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def run(self, graph: str, **inputs: Any) -> dict[str, np.ndarray]:
        """Run one graph on named inputs (checked and converted) -> named outputs."""
        if graph not in self.graphs:
            raise KeyError(f"this export has no {graph!r} graph; it has {sorted(self.graphs)}")
        spec = self.graphs[graph]
        feed, batch = {}, None
        for t in spec["inputs"]:
            name = t["name"]
            if inputs.get(name) is None:
                raise _input_error(name, f"required by the {graph!r} graph, shape {self._shape_text(t)}")
            arr = self._convert(name, inputs[name], t["dtype"])
            fits = all(isinstance(d, str) or got == d for got, d in zip(arr.shape[1:], t["shape"][1:]))
            if arr.ndim != len(t["shape"]) or not fits or min(arr.shape) < 1:
                raise _input_error(name, f"expected shape {self._shape_text(t)}, got {tuple(arr.shape)}")
            if batch is None:
                batch = arr.shape[0]
            elif arr.shape[0] != batch:
                raise _input_error(name, f"batch size {arr.shape[0]} differs from the other inputs' {batch}")
            feed[name] = arr
        return self._run(graph, feed)

    @staticmethod
    def _shape_text(t: dict[str, Any]) -> str:
        names = {BATCH_AXIS: "b", "height": "H", "width": "W"}
        return "(" + ", ".join(names.get(d, str(d)) if isinstance(d, str) else str(d) for d in t["shape"]) + ")"

    @staticmethod
    def _convert(name: str, value: Any, dtype: str) -> np.ndarray:
        arr = np.asarray(value)
        if dtype.startswith("int"):
            if arr.dtype.kind not in "iu":
                raise _input_error(name, f"expected integers, got {arr.dtype}")
            return np.ascontiguousarray(arr, dtype=np.int64)
        if name == "images" and arr.dtype == np.uint8:
            return np.ascontiguousarray(unit_images(arr))
        if arr.dtype.kind not in "fiu":
            raise _input_error(name, f"expected numbers, got {arr.dtype}")
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise _input_error(name, "contains NaN or infinite values")
        return arr

    def embed_text(self, text: Sequence[str]) -> np.ndarray:
        """Instructions -> embeddings (b, E) from the export's table; KeyError names unknown ones."""
        return self._text_table[instruction_rows(self.instructions, text)]

    def _text(self, text_emb: Any, text: Sequence[str] | None) -> np.ndarray:
        if text_emb is not None:
            return text_emb
        if text is not None:
            return self.embed_text(text)
        raise _input_error("text_emb", "pass text_emb (b, E) or text (a list of b instructions)")

    @property
    def sampling_modes(self) -> list[str]:
        """'argmax', and 'topk' when the export holds the top-k graphs (``amplify export --topk``)."""
        return list(self.manifest.get("sampling") or ["argmax"])

    def _graph_for(self, graph: str, sampling: str | None) -> str:
        if sampling in (None, "argmax"):
            return graph
        if sampling == "topk":
            if not self.has(f"{graph}_topk"):
                raise ValueError(f"this export has no top-k graphs; re-export with 'amplify export --topk' "
                                 f"(it samples with {self.sampling_modes})")
            return f"{graph}_topk"
        raise ValueError(f"sampling must be 'argmax' or 'topk', got {sampling!r}")

    def _uniform(self, batch: int, seed: int | None) -> np.ndarray:
        """Noise for top-k sampling: (b, S, K) uniform in [0, 1) from numpy's PCG64 with ``seed``."""
        shape = (batch, int(self.metadata["code_length"]), int(self.metadata["codebook_size"]))
        return np.random.default_rng(seed).random(shape, dtype=np.float32)

    def _batch(self, images: Any) -> int:
        return int(np.shape(images)[0]) if np.ndim(images) else 0

    # -- entry points ----------------------------------------------------------------------------
    def encode(self, tracks: Any = None, velocities: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Tracks (b, v, H, n, 2) or velocities (b, v, t, n, 2) -> (indices (b, S) int64, codes (b, S, h))."""
        if (tracks is None) == (velocities is None):
            raise _input_error("tracks", "pass exactly one of tracks (b, v, H, n, 2) or velocities (b, v, t, n, 2)")
        if tracks is not None:
            tr = self._convert("tracks", tracks, "float32")
            if tr.ndim != 5 or tr.shape[2] != self.metadata["track_horizon"]:
                raise _input_error("tracks", f"expected shape (b, {len(self.metadata['views'])}, "
                                 f"{self.metadata['track_horizon']}, {self.metadata['num_tracks']}, 2), got {tr.shape}")
            velocities = np.diff(tr, axis=2)
        out = self.run("encode", velocities=velocities)
        return out["indices"], out["codes"]

    def indices_to_codes(self, indices: Any) -> np.ndarray:
        """Indices (b, S) -> codes (b, S, h)."""
        return self.run("indices_to_codes", indices=indices)["codes"]

    def decode(self, codes: Any = None, indices: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Codes (b, S, h) or indices (b, S) -> (velocities (b, v, t, n, 2), logits (b, v*t*n, R))."""
        if (codes is None) == (indices is None):
            raise _input_error("codes", "pass exactly one of codes (b, S, h) or indices (b, S)")
        if indices is not None:
            idx = self._convert("indices", indices, "int64")
            size = self.metadata["codebook_size"]
            if idx.size and (idx.min() < 0 or idx.max() >= size):
                raise _input_error("indices", f"values must be in [0, {size}), got [{idx.min()}, {idx.max()}]")
            codes = self.indices_to_codes(idx)
        out = self.run("decode", codes=codes)
        return out["velocities"], out["logits"]

    def predict_codes(self, images: Any, text_emb: Any = None, text: Sequence[str] | None = None,
                      sampling: str | None = None, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Images (b, v, H, W, 3), text -> (indices (b, S) int64, codes (b, S, h)).

        ``sampling``: 'argmax' (default) or 'topk' (needs an export with --topk; ``seed`` makes it
        repeatable; numpy's generator, so the draws differ from PyTorch's for the same seed)."""
        graph = self._graph_for("predict_codes", sampling)
        extra = {"uniform": self._uniform(self._batch(images), seed)} if graph.endswith("_topk") else {}
        out = self.run(graph, images=images, text_emb=self._text(text_emb, text), **extra)
        return out["indices"], out["codes"]

    def predict_traj(self, images: Any, init_points: Any, text_emb: Any = None, text: Sequence[str] | None = None,
                     sampling: str | None = None, seed: int | None = None) -> np.ndarray:
        """Predicted tracks (b, v, H, n, 2) from initial points (b, v, n, 2) (or tracks (b, v, H', n, 2),
        whose first points are used); not clamped to [-1, 1]."""
        _, codes = self.predict_codes(images, text_emb, text, sampling, seed)
        velocities, _ = self.decode(codes=codes)
        return integrate_velocities(velocities, self._convert("init_points", init_points, "float32"))

    def inverse_dynamics(self, codes: Any, images: Any = None, proprio: Any = None, text_emb: Any = None,
                         text: Sequence[str] | None = None) -> np.ndarray:
        """Actions (b, A, action_dim) from codes (b, S, h) and the ID's other conditions."""
        names = {t["name"] for t in self.graphs.get("inverse_dynamics", {}).get("inputs", [])}
        emb = self._text(text_emb, text) if "text_emb" in names else None
        return self.run("inverse_dynamics", images=images, proprio=proprio, text_emb=emb, codes=codes)["actions"]

    def act(self, images: Any, proprio: Any = None, text_emb: Any = None, text: Sequence[str] | None = None,
            sampling: str | None = None, seed: int | None = None) -> np.ndarray:
        """Images (b, v, H, W, 3), proprio (b, P), text -> actions (b, A, action_dim); sampling as
        in ``predict_codes``."""
        graph = self._graph_for("act", sampling)
        extra = {"uniform": self._uniform(self._batch(images), seed)} if graph.endswith("_topk") else {}
        return self.run(graph, images=images, proprio=proprio, text_emb=self._text(text_emb, text), **extra)["actions"]


class OnnxModel(ExportedModel):
    """An ONNX export run by ONNX Runtime; ``precision='int8'`` uses the quantized graphs."""

    runtime = "onnx"

    def __init__(self, path: str | Path, device: str = "cpu", providers: Sequence[str] | None = None,
                 precision: str = "float32", threads: int | None = None, spin: bool = True):
        super().__init__(path)
        import onnxruntime as ort

        if self.manifest["runtime"] not in ("onnx", "triton"):
            raise ManifestError(f"{path}: holds {self.manifest['runtime']} graphs, not ONNX")
        if precision not in ("float32", "int8"):
            raise ValueError(f"precision must be 'float32' or 'int8', got {precision!r}")
        self.device, self.precision = device, precision
        self.providers = list(providers) if providers else select_providers(device)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        if not spin:  # idle intra-op threads sleep instead of spinning (better on a shared or busy CPU)
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._sessions = {}
        for name, g in self.graphs.items():
            if precision == "int8" and "int8" not in g:
                raise ManifestError(f"{path}: graph {name!r} has no int8 variant; export with --int8")
            f = self.path / (g["int8"]["file"] if precision == "int8" else g["file"])
            self._sessions[name] = ort.InferenceSession(str(f), opts, providers=_provider_options(self.providers, device))

    def _run(self, graph: str, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sess = self._sessions[graph]
        names = [o.name for o in sess.get_outputs()]
        return dict(zip(names, sess.run(names, feed)))


class TorchScriptModel(ExportedModel):
    """A TorchScript export run with ``torch.jit.load`` (no project code needed)."""

    runtime = "torchscript"

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None):
        super().__init__(path)
        import torch

        if self.manifest["runtime"] != "torchscript":
            raise ManifestError(f"{path}: holds {self.manifest['runtime']} graphs, not TorchScript")
        if threads:
            torch.set_num_threads(threads)
        self._torch, self.device = torch, torch.device(device)
        self._modules = {n: torch.jit.load(str(self.path / g["file"]), map_location=self.device).eval()
                         for n, g in self.graphs.items()}

    def _run(self, graph: str, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch, spec = self._torch, self.graphs[graph]
        with torch.no_grad():
            out = self._modules[graph](*[torch.from_numpy(feed[t["name"]]).to(self.device) for t in spec["inputs"]])
        out = out if isinstance(out, tuple) else (out,)
        return {t["name"]: o.cpu().numpy() for t, o in zip(spec["outputs"], out)}


def load_exported(path: str | Path, device: str = "cpu", **kwargs: Any) -> ExportedModel:
    """The runtime the manifest names: OnnxModel for 'onnx'/'triton' exports, TorchScriptModel otherwise."""
    runtime = read_manifest(path)["runtime"]
    if runtime == "torchscript":
        return TorchScriptModel(path, device=device, **kwargs)
    return OnnxModel(path, device=device, **kwargs)
