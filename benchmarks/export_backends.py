"""Side-by-side latency of ``act`` (and ``predict_codes``) in PyTorch eager, TorchScript, ONNX Runtime
float32 and int8, on the same inputs in one process.

    python -m benchmarks.export_backends --model amplify.pt --onnx exported/onnx --torchscript exported/ts \
        --batch 1 --runs 30 --threads 1

Rounds are interleaved (one call of each back end per round) so that load from other processes
affects every back end alike; the report is the median and the 10th/90th percentiles in ms, with
each back end's largest action difference from PyTorch.
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any, Callable

import numpy as np


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"median_ms": round(float(np.median(a)), 3), "p10_ms": round(float(np.percentile(a, 10)), 3),
            "p90_ms": round(float(np.percentile(a, 90)), 3)}


def run_benchmark(model: str, onnx_dir: str | None, ts_dir: str | None, batch: int = 1, runs: int = 30,
                  threads: int = 1, entry: str = "act", seed: int = 0) -> dict[str, Any]:
    """Time ``entry`` ('act' or 'predict_codes') for every back end given; returns the report dict."""
    import torch

    from amplify.policy import AMPLIFY
    from exporters.runtime import OnnxModel, TorchScriptModel

    torch.set_num_threads(threads)
    policy = AMPLIFY.load(model).eval()
    mt = policy.cfg.motion_tokenizer
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, (batch, mt.num_views, *mt.img_shape, 3)).astype(np.float32)
    text_emb = rng.standard_normal((batch, policy.cfg.forward_dynamics.text_embed_dim)).astype(np.float32)
    proprio = (rng.standard_normal((batch, policy.cfg.inverse_dynamics.proprio_dim)) * 0.5).astype(np.float32)

    def call(m) -> Callable[[], np.ndarray]:
        if entry == "act":
            return lambda: np.asarray(m.act(images, proprio, text_emb=text_emb))
        return lambda: np.asarray(m.predict_codes(images, text_emb=text_emb)[1])

    def torch_call() -> np.ndarray:
        with torch.no_grad():
            out = policy.act(images, proprio, text_emb=text_emb) if entry == "act" else \
                policy.predict_codes(images, text_emb=text_emb)[1]
        return out.numpy()

    backends: dict[str, Callable[[], np.ndarray]] = {"pytorch_eager": torch_call}
    if ts_dir:
        backends["torchscript"] = call(TorchScriptModel(ts_dir, threads=threads))
    if onnx_dir:
        backends["onnxruntime_float32"] = call(OnnxModel(onnx_dir, threads=threads))
        if all("int8" in g for g in OnnxModel(onnx_dir, threads=threads).graphs.values()):
            backends["onnxruntime_int8"] = call(OnnxModel(onnx_dir, precision="int8", threads=threads))
    ref = torch_call()
    diffs = {}
    for name, fn in backends.items():
        for _ in range(3):  # warm-up (TorchScript optimizes on its first calls)
            out = fn()
        diffs[name] = float(np.abs(out - ref).max())
    times: dict[str, list[float]] = {n: [] for n in backends}
    for _ in range(runs):
        for name, fn in backends.items():
            t = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t) * 1e3)
    base = float(np.median(times["pytorch_eager"]))
    return {
        "entry": entry, "batch": batch, "runs": runs, "threads": threads, "model": model,
        "backends": {n: {**_stats(t), "speedup_vs_pytorch": round(base / float(np.median(t)), 3),
                         "max_abs_diff_vs_pytorch": diffs[n]} for n, t in times.items()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.export_backends", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the bundle the exports were made from (for PyTorch eager)")
    p.add_argument("--onnx", help="an ONNX (or Triton) export directory; its int8 graphs are timed when present")
    p.add_argument("--torchscript", help="a TorchScript export directory")
    p.add_argument("--entry", choices=["act", "predict_codes"], default="act")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    report = run_benchmark(a.model, a.onnx, a.torchscript, a.batch, a.runs, a.threads, a.entry)
    print(f"{a.entry} at batch {a.batch}, {a.threads} thread(s), {a.runs} interleaved rounds")
    print(f"{'back end':<22}{'median ms':>10}{'p10':>9}{'p90':>9}{'speedup':>9}{'max|diff|':>12}")
    for name, r in report["backends"].items():
        print(f"{name:<22}{r['median_ms']:>10.2f}{r['p10_ms']:>9.2f}{r['p90_ms']:>9.2f}{r['speedup_vs_pytorch']:>9.2f}"
              f"{r['max_abs_diff_vs_pytorch']:>12.2e}")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
