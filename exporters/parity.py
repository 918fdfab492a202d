"""Parity of exported graphs against the PyTorch library: sample inputs, reference outputs, comparison.

Integer outputs (indices) must be equal; float outputs within ``atol`` absolute. A mismatch is
reported with the graph, output, batch size, max abs difference and the first differing positions.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from exporters.source import ExportSource


class ParityError(RuntimeError):
    """An exported graph whose outputs differ from the PyTorch model's."""

    def __init__(self, failures: list[dict[str, Any]]):
        self.failures = failures
        lines = [
            f"graph {f['graph']!r} output {f['output']!r} at batch {f['batch']}: max abs diff {f['max_abs_diff']:.3g}"
            f" (allowed {f['allowed']}), {f['num_differing']} of {f['size']} values differ, first at {f['positions']}"
            for f in failures
        ]
        super().__init__("exported graphs do not match the PyTorch model:\n  " + "\n  ".join(lines))


def sample_inputs(source: ExportSource, names: tuple[str, ...], batch: int, seed: int) -> dict[str, torch.Tensor]:
    """Deterministic inputs of ``batch`` samples for the named graph inputs.

    Images uniform in [0, 1], text embeddings N(0, 1), proprioception N(0, 0.5^2), velocities from
    uniform tracks in [-1, 1], indices uniform over the codebook, codes from those indices.
    """
    g = torch.Generator().manual_seed(seed * 1000 + batch)
    mt = source.mt_cfg
    out: dict[str, torch.Tensor] = {}
    for name in names:
        if name == "images":
            out[name] = torch.rand(batch, mt.num_views, *mt.img_shape, 3, generator=g)
        elif name == "text_emb":
            out[name] = torch.randn(batch, source.model.cfg.forward_dynamics.text_embed_dim, generator=g)
        elif name == "proprio":
            out[name] = torch.randn(batch, source.model.cfg.inverse_dynamics.proprio_dim, generator=g) * 0.5
        elif name == "velocities":
            tracks = torch.rand(batch, mt.num_views, mt.track_pred_horizon, mt.num_tracks, 2, generator=g) * 2 - 1
            out[name] = torch.diff(tracks, dim=2)
        elif name == "uniform":
            cfg = source.model.cfg.forward_dynamics
            out[name] = torch.rand(batch, cfg.pred_seq_len, cfg.codebook_size, generator=g)
        elif name in ("indices", "codes"):
            idx = torch.randint(0, mt.codebook_size, (batch, mt.seq_len), generator=g)
            if name == "indices":
                out[name] = idx
            else:
                with torch.no_grad():
                    out[name] = _tokenizer(source).indices_to_codes(idx)
        else:
            raise KeyError(f"no sample for input {name!r}")
    return out


def _tokenizer(source: ExportSource):
    return source.model.motion_tokenizer if source.kind == "bundle" else source.model


@torch.no_grad()
def reference_outputs(source: ExportSource, graph: str, inputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The library's own outputs for graph ``graph`` (the public methods, not the export wrappers)."""
    mt = _tokenizer(source)
    if graph == "encode":
        codes, indices = mt.tokenize(inputs["velocities"])
        out = {"indices": indices, "codes": codes}
    elif graph == "indices_to_codes":
        out = {"codes": mt.indices_to_codes(inputs["indices"])}
    elif graph == "decode":
        velocities, logits = mt.decode(inputs["codes"])
        out = {"velocities": velocities, "logits": logits}
    else:
        policy = source.model
        if graph == "predict_codes":
            indices, codes = policy.predict_codes(inputs["images"], text_emb=inputs["text_emb"], ar_sampling="argmax")
            out = {"indices": indices, "codes": codes}
        elif graph == "inverse_dynamics":
            tokens = None
            if "images" in inputs:
                t = policy.image_tokens(inputs["images"])  # (b, v, 49, 512)
                tokens = t.permute(0, 2, 1, 3).reshape(t.shape[0], t.shape[2], -1)
            out = {"actions": policy.inverse_dynamics(img_tokens=tokens, text_emb=inputs.get("text_emb"),
                                                      proprio=inputs.get("proprio"), codes=inputs["codes"])}
        elif graph in ("predict_codes_topk", "act_topk"):
            indices = topk_reference_indices(policy, inputs["images"], inputs["text_emb"], inputs["uniform"])
            codes = policy.motion_tokenizer.indices_to_codes(indices)
            if graph == "predict_codes_topk":
                out = {"indices": indices, "codes": codes}
            else:
                t = policy.image_tokens(inputs["images"])
                tokens = t.permute(0, 2, 1, 3).reshape(t.shape[0], t.shape[2], -1)
                out = {"actions": policy.inverse_dynamics(img_tokens=tokens, text_emb=inputs["text_emb"],
                                                          proprio=inputs.get("proprio"), codes=codes),
                       "indices": indices}
        elif graph == "act":
            actions = policy.act(inputs["images"], inputs.get("proprio"), text_emb=inputs["text_emb"], ar_sampling="argmax")
            indices, _ = policy.predict_codes(inputs["images"], text_emb=inputs["text_emb"], ar_sampling="argmax")
            out = {"actions": actions, "indices": indices}
        else:
            raise KeyError(f"unknown graph {graph!r}")
    return {k: v.detach().cpu().numpy() for k, v in out.items()}


@torch.no_grad()
def topk_reference_indices(policy, images: torch.Tensor, text_emb: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Top-k sampling with given uniform noise (b, S, K), computed the library's uncached way
    (``ForwardDynamics.predict_uncached``: the whole sequence through the trunk at every step) -> indices (b, S)."""
    fd = policy.forward_dynamics
    tokens = policy.image_tokens(images)  # (b, v, 49, 512)
    cond = fd.get_cond_tokens(tokens.reshape(tokens.shape[0], -1, tokens.shape[-1]), text_emb)
    return fd.predict_uncached(cond, "topk", uniform=uniform)


def compare(graph: str, batch: int, expected: dict[str, np.ndarray], actual: dict[str, np.ndarray],
            atol: float) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """-> (max abs difference per output, failures). Integer outputs must match exactly."""
    diffs: dict[str, float] = {}
    failures: list[dict[str, Any]] = []
    for name, ref in expected.items():
        got = actual.get(name)
        if got is None or got.shape != ref.shape:
            failures.append({"graph": graph, "output": name, "batch": batch, "max_abs_diff": float("inf"),
                             "allowed": "same shape", "num_differing": int(ref.size), "size": int(ref.size),
                             "positions": f"shape {None if got is None else got.shape} vs {ref.shape}"})
            continue
        exact = ref.dtype.kind in "iub"
        diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
        bad = diff > 0 if exact else ~(diff <= atol)  # NaN counts as bad
        diffs[name] = float(np.nanmax(diff)) if diff.size else 0.0
        if bad.any():
            failures.append({"graph": graph, "output": name, "batch": batch, "max_abs_diff": diffs[name],
                             "allowed": 0 if exact else atol, "num_differing": int(bad.sum()), "size": int(ref.size),
                             "positions": [list(map(int, p)) for p in np.argwhere(bad)[:5]]})
    return diffs, failures
