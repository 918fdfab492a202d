"""The alternative FD export, measured against the unrolled loop: a cached single-step graph driven
by a small Python loop. Kept as a measurement (``python -m benchmarks.fd_step --model M``), not
shipped in exports: the unrolled graph measured faster on the small bundle and the same at
paper size (docs/exporters.md).

Both start from the vision encoder's patch tokens so that only the FD loop is compared:

    unrolled:     img_tokens (b, v, 49, 512), text_emb (b, E) -> indices (b, S)   (as inside predict_codes/act)
    prefix graph: img_tokens, text_emb -> logits (b, K), k_i, v_i (b, nh, C+1, hd) per layer
    step graph:   index (b, 1) int64, k_i, v_i (b, nh, T, hd) -> logits (b, K), k_i, v_i (b, nh, T+1, hd)
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from exporters.graphs import _BundleGraph


class FDUnrolledGraph(_BundleGraph):
    """The shipped form: the S argmax steps unrolled in one graph, from patch tokens."""

    def forward(self, tokens: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        return self.predict_indices(tokens, text_emb)


class FDPrefixGraph(_BundleGraph):
    """Condition tokens and sos through the trunk -> first logits and the key/value cache."""

    def forward(self, tokens: torch.Tensor, text_emb: torch.Tensor):
        fd = self.fd
        b = tokens.shape[0]
        cond = fd.get_cond_tokens(tokens.reshape(b, -1, tokens.shape[-1]), text_emb)
        hidden, cache = fd.trunk.forward_cached(torch.cat([cond, fd.sos_token.expand(b, -1, -1)], dim=1), None)
        return (fd.unembed(hidden[:, -1]), *[t for kv in cache for t in kv])


class FDStepGraph(_BundleGraph):
    """One step: the chosen index's code through the trunk after the cache -> logits, longer cache."""

    def forward(self, index: torch.Tensor, *cache_flat: torch.Tensor):
        cache = [(cache_flat[2 * i], cache_flat[2 * i + 1]) for i in range(len(cache_flat) // 2)]
        hidden, new_cache = self.fd.trunk.forward_cached(self.fsq.indices_to_codes(index), cache)
        return (self.fd.unembed(hidden[:, -1]), *[t for kv in new_cache for t in kv])


def export_step_graphs(policy: nn.Module, out: Path, opset: int = 17) -> tuple[Path, Path, Path]:
    """Write unrolled.onnx, prefix.onnx and step.onnx (dynamic batch; the step's cache length too)."""
    from exporters.writers import write_onnx

    layers = policy.cfg.forward_dynamics.num_layers
    kv_names = [f"{kind}_{i}" for i in range(layers) for kind in ("k", "v")]
    mt = policy.cfg.motion_tokenizer
    tokens = torch.randn(2, mt.num_views, 49, policy.cfg.vision.embed_dim)
    text = torch.randn(2, policy.cfg.forward_dynamics.text_embed_dim)
    prefix, step = FDPrefixGraph(policy).eval(), FDStepGraph(policy).eval()
    write_onnx(FDUnrolledGraph(policy).eval(), (tokens, text), out / "unrolled.onnx", ["tokens", "text_emb"], ["indices"], opset)
    write_onnx(prefix, (tokens, text), out / "prefix.onnx", ["tokens", "text_emb"], ["logits", *kv_names], opset)
    with torch.no_grad():
        first = prefix(tokens, text)
    index = first[0].argmax(-1, keepdim=True)
    with torch.no_grad():  # the cache axis is dynamic too, so this graph has its own dynamic_axes
        torch.onnx.export(step, (index, *first[1:]), str(out / "step.onnx"), dynamo=False, opset_version=opset,
                          input_names=["index", *kv_names], output_names=["logits", *[f"new_{n}" for n in kv_names]],
                          dynamic_axes={"index": {0: "batch"}, "logits": {0: "batch"},
                                        **{n: {0: "batch", 2: "past"} for n in kv_names},
                                        **{f"new_{n}": {0: "batch", 2: "past_plus_1"} for n in kv_names}})
    return out / "unrolled.onnx", out / "prefix.onnx", out / "step.onnx"


def stepwise_predict(prefix, step, tokens: np.ndarray, text_emb: np.ndarray, steps: int) -> np.ndarray:
    """Argmax prediction with the step graph in a Python loop -> indices (b, S) int64."""
    out = prefix.run(None, {"tokens": tokens, "text_emb": text_emb})
    kv_names = [i.name for i in step.get_inputs()][1:]
    indices = []
    for s in range(steps):
        idx = out[0].argmax(-1)[:, None].astype(np.int64)
        indices.append(idx)
        if s + 1 < steps:
            out = step.run(None, {"index": idx, **dict(zip(kv_names, out[1:]))})
    return np.concatenate(indices, axis=1)


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort

    from amplify.policy import AMPLIFY

    p = argparse.ArgumentParser(prog="python -m benchmarks.fd_step", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    policy = AMPLIFY.load(a.model).eval()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = export_step_graphs(policy, tmp)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = a.threads
        sess = {n: ort.InferenceSession(str(f), opts, providers=["CPUExecutionProvider"])
                for n, f in zip(("unrolled", "prefix", "step"), files)}
        mt = policy.cfg.motion_tokenizer
        rng = np.random.default_rng(0)
        images = rng.uniform(0, 1, (a.batch, mt.num_views, *mt.img_shape, 3)).astype(np.float32)
        text = rng.standard_normal((a.batch, policy.cfg.forward_dynamics.text_embed_dim)).astype(np.float32)
        with torch.no_grad():
            tokens = policy.image_tokens(images).numpy()  # (b, v, 49, 512)
        steps = policy.cfg.forward_dynamics.pred_seq_len
        runs = {"unrolled": lambda: sess["unrolled"].run(["indices"], {"tokens": tokens, "text_emb": text})[0],
                "stepwise": lambda: stepwise_predict(sess["prefix"], sess["step"], tokens, text, steps)}
        ref = policy.predict_codes(images, text_emb=text)[0].numpy()
        same = {n: bool((fn() == ref).all()) for n, fn in runs.items()}
        times: dict[str, list[float]] = {n: [] for n in runs}
        for _ in range(a.runs):
            for n, fn in runs.items():
                t = time.perf_counter()
                fn()
                times[n].append((time.perf_counter() - t) * 1e3)
    report = {n: {"median_ms": round(float(np.median(t)), 3), "indices_equal_pytorch": same[n]} for n, t in times.items()}
    print(json.dumps({"model": a.model, "batch": a.batch, "threads": a.threads, "runs": a.runs, "fd_loop": report}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
