"""Back ends over an `amplify export` directory (``manifest.json`` + one graph per entry point), run
with the exporter's runtime (``exporters.runtime``: ONNX Runtime or ``torch.jit``).

The graphs take images of any size and resize them once, inside, straight to the vision encoder's
size, as the PyTorch back end does. (Exports older than manifest format 2 take the bundle's
``image_size`` only: for those alone, other sizes are resized to it here first.) Exports made
without ``--topk`` implement argmax prediction only: ``sampling="topk"`` is refused (``sampling_modes``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from amplify.info import ModelInfo
from service.backends.base import Backend

# The graphs the service runs; inverse_dynamics is optional (``act`` holds the whole policy).
REQUIRED_GRAPHS = ("encode", "indices_to_codes", "decode", "predict_codes", "act")


class ExportedBackend(Backend):
    """Shared by the ONNX and TorchScript back ends: the manifest's ModelInfo, numpy entry points."""

    runtime_name = ""

    def __init__(self, runtime: Any, path: Path, device: str):
        self.rt = runtime
        self.path = path
        self.device = device
        manifest = runtime.manifest
        missing = [g for g in REQUIRED_GRAPHS if not runtime.has(g)]
        if missing:
            raise ValueError(f"{path}: the export lacks the graphs {missing} that the service runs; export a bundle with "
                             f"`amplify export --model <bundle> --graphs {','.join(REQUIRED_GRAPHS)}`")
        self.info = ModelInfo.from_manifest(manifest)
        self.sampling_modes = tuple(manifest.get("sampling") or ["argmax"])
        model = manifest["model"]
        self._meta = {"name": str(model.get("name")), "version": str(model.get("version")),
                      "format": f"amplify-export/{manifest['runtime']}", "trained": model.get("trained"),
                      "path": str(path)}

    def model_metadata(self) -> dict[str, Any]:
        return dict(self._meta)

    def instruction_table(self) -> tuple[list[str], np.ndarray | None]:
        if not self.rt.instructions:
            return [], None
        return list(self.rt.instructions), self.rt.embed_text(self.rt.instructions)

    def _images(self, images: np.ndarray) -> np.ndarray:
        """Images (b, v, H, W, 3) as the graphs take them: unchanged, except for a format-1 export whose
        graphs take ``image_size`` only (those are resized to it)."""
        dims = next(t["shape"] for t in self.rt.graphs["act"]["inputs"] if t["name"] == "images")[2:4]
        if any(isinstance(d, str) for d in dims) or images.shape[2:4] == tuple(dims):
            return images
        h, w = (int(d) for d in dims)
        import torch
        import torch.nn.functional as F

        b, v = images.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(images)).reshape(b * v, *images.shape[2:]).permute(0, 3, 1, 2)
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=False)
        return x.permute(0, 2, 3, 1).reshape(b, v, h, w, 3).contiguous().numpy()

    def encode(self, velocities):
        indices, codes = self.rt.encode(velocities=velocities)
        return {"indices": indices.astype(np.int64), "codes": codes}

    def indices_to_codes(self, indices):
        return self.rt.indices_to_codes(indices)

    def decode(self, codes, return_logits=True):
        velocities, logits = self.rt.decode(codes=codes)
        return {"velocities": velocities, "logits": logits}

    def predict_codes(self, images, text_emb, sampling="argmax", seed=None):
        indices, codes = self.rt.predict_codes(self._images(images), text_emb=text_emb, sampling=sampling)
        return {"indices": indices.astype(np.int64), "codes": codes}

    def act(self, images, proprio, text_emb, sampling="argmax", seed=None):
        return {"actions": self.rt.act(self._images(images), proprio, text_emb=text_emb, sampling=sampling)}


def _check_dir(path: str | Path | None, backend: str) -> Path:
    if path is None:
        raise ValueError(f"--backend {backend} needs --model <directory written by `amplify export --format {backend}`>")
    p = Path(path)
    if not (p / "manifest.json").is_file():
        raise FileNotFoundError(f"{p}: no manifest.json; --backend {backend} serves a directory written by "
                                f"`amplify export --format {backend}`")
    return p
