"""Issue 17 target 1: where the prepared FD stage's time goes at batch 1, and float32 products on
oneDNN's packed weights (``InferenceLinear`` with ``onednn``, the default) against MKL's ``mm`` (the
previous default), side by side in one run, in turns, per thread count.

    python -m benchmarks.onednn_linear [--bundle DIR] [--threads 1,2] [--repeats 6] [--batches 1,16]

Without ``--bundle`` a random paper bundle is written once (``amplify init --preset paper``) under
``benchmarks/.cache``. Prints a markdown report (ratios = MKL time / oneDNN time) and writes it with its
JSON to ``benchmarks/results/<stamp>-onednn-linear.md|json``. Sections, per thread count:

1. the FD weights' products alone (the 32 trunk weights and the unembedding, one product each) at 1,
   16 and 100 rows, against one read of the same weights (``sum``); for the record the same products
   in bfloat16 (torch's ``mm``, what ``precision="bf16"`` runs with ``AMPLIFY_ONEDNN_LINEAR=0``, vs
   oneDNN packed, what it runs by default);
2. the FD stage at batch 1 taken apart: the 100-token prefix, one decoding step at position 100,
   that step's 32 products alone, attention over the cache alone, and the per-token rest (logits,
   argmax, code lookup); the sum of the parts against the measured prediction; on more than one
   thread also the prediction with its one-token steps on one thread;
3. the other stages at batch 1 (vision, ID, the tokenizer's encoding and decoding);
4. FD prediction and the whole ``act`` at each batch, both paths, with their indices compared, and at
   batch 1 issue 17's bandwidth floor from probes in the same turns (``benchmarks.inprocess``).
"""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from amplify import AMPLIFY, points_to_velocities
from benchmarks.common import machine_info, time_interleaved
from benchmarks.inprocess import floors, floors_from, make_inputs

PATHS = ("mkl", "onednn")


def ms(r: dict) -> float:
    return r["median_s"] * 1e3


def fd_linears(model: AMPLIFY) -> list:
    """FD's InferenceLinear layers in step order (8 x qkv, out, fc, fc_out), then the unembedding."""
    fd = model.forward_dynamics
    return [lin for layer in fd.fused_decoder.layers for lin in (layer[1], layer[2], layer[4], layer[5])] + [fd.unembed]


def products(models: dict[str, AMPLIFY], repeats: int) -> dict:
    """The FD weights' products alone at 1, 16 and 100 rows, each path, and one read of the weights."""
    lins = {k: fd_linears(m) for k, m in models.items()}
    weights = [lin.weight_t for lin in lins["mkl"]]
    nbytes = sum(w.numel() * w.element_size() for w in weights)
    out: dict = {"weight_bytes": nbytes}
    # the same weights in bfloat16: torch's mm (precision=bf16 with AMPLIFY_ONEDNN_LINEAR=0) vs oneDNN's
    # packed product (precision=bf16's default)
    w16 = [w.to(torch.bfloat16) for w in weights]
    p16 = [torch.ops.mkldnn._reorder_linear_weight(w.t().contiguous(), None) for w in w16]
    for n in (1, 16, 100):
        xs = [torch.randn(n, lin.in_features) for lin in lins["mkl"]]
        x16 = [x.to(torch.bfloat16) for x in xs]
        fns = {k: (lambda ls=ls: [lin.matmul2d(x) for lin, x in zip(ls, xs)]) for k, ls in lins.items()}
        fns["bf16_mm"] = lambda: [torch.mm(x, w) for x, w in zip(x16, w16)]
        fns["bf16_onednn"] = lambda: [torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")
                                      for x, w in zip(x16, p16)]
        if n == 1:
            fns["weight_read_sum"] = lambda: [w.sum() for w in weights]
        r = time_interleaved(fns, repeats=repeats * 2, warmup=2)
        out[n] = {k: {"ms": ms(v), "GB_per_s": nbytes / (2 if k.startswith("bf16") else 1) / v["median_s"] / 1e9,
                      "GFLOP_per_s": 2 * n * nbytes / 4 / v["median_s"] / 1e9} for k, v in r.items()}
    return out


def step_parts(model: AMPLIFY, cond: torch.Tensor) -> dict[str, callable]:
    """Callables for the parts of one batch-1 FD prediction of a prepared model."""
    fd = model.forward_dynamics
    fused = fd.fused_decoder
    b, h = cond.shape[0], fd.cfg.hidden_dim
    prefix_x = torch.cat([cond, fd.sos_token.expand(b, -1, -1)], dim=1)
    cache = fd.trunk.kv_buffers()
    fd.trunk.forward_cached(prefix_x, cache)
    p = cache[0].length
    code = fd.quantize.indices_to_codes(torch.zeros(b, 1, dtype=torch.long))[:, 0]
    lins = fd_linears(model)[:-1]
    xs = [torch.randn(b, lin.in_features) for lin in lins]
    nh = fused.num_heads
    q = torch.randn(b, nh, 1, h // nh)
    last = torch.randn(b, h)

    def step():
        for buf in cache:
            buf.length = p
        fused.step(code, cache)

    def per_token():  # what predict does per token besides the step: logits, argmax, the chosen code
        logits = fd._logits(last)
        idx = fd._choose(logits, "argmax", None)
        fd.quantize.indices_to_codes(idx[:, None])

    return {"predict": lambda: fd.predict(cond),
            "prefix": lambda: fd.trunk.forward_cached(prefix_x, fd.trunk.kv_buffers()),
            "step": step,
            "step_products": lambda: [lin.matmul2d(x) for lin, x in zip(lins, xs)],
            "attention": lambda: [F.scaled_dot_product_attention(q, buf.k[:, :, :p + 1], buf.v[:, :, :p + 1])
                                  for buf in cache],
            "per_token_rest": per_token}


def predict_steps_one_thread(model: AMPLIFY, cond: torch.Tensor) -> torch.Tensor:
    """FD prediction with the prefix at torch's thread count and the one-token steps on one thread."""
    fd, n = model.forward_dynamics, torch.get_num_threads()
    fused = fd.fused_decoder
    step = fused.step

    def one_thread_step(x, cache):
        torch.set_num_threads(1)
        return step(x, cache)

    fused.step = one_thread_step
    try:
        return fd.predict(cond)
    finally:
        del fused.step
        torch.set_num_threads(n)


def fd_breakdown(models: dict[str, AMPLIFY], cond: torch.Tensor, repeats: int) -> dict:
    parts = {k: step_parts(m, cond) for k, m in models.items()}
    fns = {f"{k}:{part}": fn for k, p in parts.items() for part, fn in p.items()}
    if torch.get_num_threads() > 1:  # the lever of one-row steps on one thread, in the same turns
        fns["onednn:predict_steps_1_thread"] = lambda: predict_steps_one_thread(models["onednn"], cond)
    r = time_interleaved(fns, repeats=repeats, warmup=1)
    steps = models["mkl"].cfg.forward_dynamics.pred_seq_len
    out: dict = {}
    for k in parts:
        d = {part: ms(v) for key, v in r.items() for part in [key.split(":", 1)[1]] if key.startswith(k + ":")}
        d["step_other"] = d["step"] - d["step_products"]
        d["sum_of_parts"] = d["prefix"] + (steps - 1) * d["step"] + steps * d["per_token_rest"]
        out[k] = d
    return out


def other_stages(models: dict[str, AMPLIFY], x1: dict, repeats: int) -> dict:
    """The stages besides FD, both paths, in turns: vision, ID, the tokenizer's encoding and decoding."""
    m0 = models["mkl"]
    with torch.no_grad():
        tokens = m0.image_tokens(x1["images"])
        txt, prop = torch.from_numpy(x1["text_emb"]), torch.from_numpy(x1["proprio"])
        cond = m0.forward_dynamics.get_cond_tokens(rearrange(tokens, "b v p d -> b (v p) d"), txt)
        codes = m0.motion_tokenizer.indices_to_codes(m0.forward_dynamics.predict(cond))
    img_id = rearrange(tokens, "b v p d -> b p (v d)")
    vel = {b: points_to_velocities(torch.from_numpy(make_inputs(m0, b)["tracks"])) for b in (1, 32)}
    codes8 = codes.expand(8, -1, -1).contiguous()
    fns = {}
    for k, m in models.items():
        fns.update({f"vision_2views:{k}": lambda m=m: m.image_tokens(x1["images"]),
                    f"inverse_dynamics:{k}": lambda m=m: m.inverse_dynamics(img_id, txt, prop, codes),
                    f"mt_tokenize_b1:{k}": lambda m=m: m.motion_tokenizer.tokenize(vel[1]),
                    f"mt_tokenize_b32:{k}": lambda m=m: m.motion_tokenizer.tokenize(vel[32]),
                    f"mt_decode_velocities_b1:{k}": lambda m=m: m.motion_tokenizer.decode_velocities(codes),
                    f"mt_decode_velocities_b8:{k}": lambda m=m: m.motion_tokenizer.decode_velocities(codes8)})
    return {k: ms(v) for k, v in time_interleaved(fns, repeats=repeats, warmup=1).items()}


def run(bundle: Path, threads: list[int], batches: list[int], repeats: int) -> dict:
    base = AMPLIFY.load(bundle).eval().requires_grad_(False)
    models = {"mkl": copy.deepcopy(base).prepare_for_inference(onednn=False),
              "onednn": copy.deepcopy(base).prepare_for_inference(onednn=True)}
    assert all(lin.packed is None for lin in fd_linears(models["mkl"]))
    lins = fd_linears(models["onednn"])
    res: dict = {"bundle": str(bundle), "threads": {},
                 "fd_layers_packed": f"{sum(lin.packed is not None for lin in lins)} of {len(lins)}",
                 "packed_weight_mb": sum(m.in_features * m.out_features * 4 for m in models["onednn"].modules()
                                         if getattr(m, "packed", None) is not None) / 1e6}
    with torch.no_grad():
        x = {b: make_inputs(base, b) for b in batches}
        cond = {}
        for b in batches:
            tokens = base.image_tokens(x[b]["images"])
            cond[b] = base.forward_dynamics.get_cond_tokens(rearrange(tokens, "b v p d -> b (v p) d"),
                                                            torch.from_numpy(x[b]["text_emb"]))
        # indices: both paths against the unprepared cached model, and at batch 1 the uncached reference
        same = {}
        for b in batches:
            ref = base.forward_dynamics.predict(cond[b])
            same[b] = {k: bool(torch.equal(m.forward_dynamics.predict(cond[b]), ref)) for k, m in models.items()}
            if b == 1:
                same[b]["reference_uncached_equals_cached"] = bool(
                    torch.equal(base.forward_dynamics.predict_uncached(cond[b]), ref))
            a_mkl = models["mkl"].act(x[b]["images"], x[b]["proprio"], text_emb=x[b]["text_emb"])
            a_one = models["onednn"].act(x[b]["images"], x[b]["proprio"], text_emb=x[b]["text_emb"])
            same[b]["act_max_abs_diff_onednn_vs_mkl"] = float((a_mkl - a_one).abs().max())
        res["indices_equal_unprepared"] = same
        if 1 in batches:  # issue 17's floor: its counts once, its rates in the same turns as act at batch 1
            counts = floors(base, x[1], 1.0, 1.0)
        del base
        for t in threads:
            torch.set_num_threads(t)
            tr: dict = {"products": products(models, repeats)}
            if 1 in batches:
                tr["fd_b1"] = fd_breakdown(models, cond[1], repeats)
                tr["other_stages_b1"] = other_stages(models, x[1], repeats)
            for b in batches:
                fns = {f"fd_predict:{k}": (lambda m=m, c=cond[b]: m.forward_dynamics.predict(c)) for k, m in models.items()}
                fns.update({f"act:{k}": (lambda m=m, xb=x[b]: m.act(xb["images"], xb["proprio"], text_emb=xb["text_emb"]))
                            for k, m in models.items()})
                if b == 1:  # the floor's probes, as benchmarks.inprocess measures them
                    n_mm = 2048
                    ma, mb = torch.randn(n_mm, n_mm), torch.randn(n_mm, n_mm)
                    src = torch.randn(256 * (1 << 20) // 4)
                    dst = torch.empty_like(src)
                    mb_packed = torch.ops.mkldnn._reorder_linear_weight(mb.t().contiguous(), None)
                    fns["_probe_matmul"] = lambda: ma @ mb
                    fns["_probe_matmul_onednn"] = lambda: torch.ops.mkldnn._linear_pointwise(ma, mb_packed, None, "none", [], "")
                    fns["_probe_copy"] = lambda: dst.copy_(src)
                r = time_interleaved(fns, repeats=repeats if b < 8 else max(3, repeats // 2), warmup=1)
                if b == 1:
                    bw = 2 * src.numel() * 4 / r.pop("_probe_copy")["median_s"]
                    fl = floors_from(counts, 2 * n_mm**3 / r.pop("_probe_matmul")["median_s"], bw)
                    fl1 = floors_from(counts, 2 * n_mm**3 / r.pop("_probe_matmul_onednn")["median_s"], bw)
                    tr["floor"] = {"bandwidth_floor_ms": fl["bandwidth_floor_s"] * 1e3,
                                   "matmul_GFLOP_per_s": fl["matmul_flops_per_s"] / 1e9,
                                   "copy_GB_per_s": fl["copy_bytes_per_s"] / 1e9,
                                   "bandwidth_floor_onednn_rate_ms": fl1["bandwidth_floor_s"] * 1e3,
                                   "matmul_onednn_GFLOP_per_s": fl1["matmul_flops_per_s"] / 1e9}
                tr[f"batch{b}"] = {k: ms(v) for k, v in r.items()}
            tr["load_average"] = os.getloadavg()
            res["threads"][t] = tr
            print(f"threads {t} done, load {tr['load_average']}", file=sys.stderr, flush=True)
    return res


def report(r: dict) -> list[str]:
    L = [f"- bundle: {r['bundle']} (FD layers packed for oneDNN: {r['fd_layers_packed']}; packed copies of "
         f"weights in the whole bundle: {r['packed_weight_mb']:.0f} MB)",
         f"- machine: {json.dumps(r['machine'])}",
         f"- indices equal to the unprepared model (cached FD): {json.dumps(r['indices_equal_unprepared'])}", ""]
    for t, tr in r["threads"].items():
        L += [f"## {t} thread(s) (load average after: {', '.join(f'{v:.2f}' for v in tr['load_average'])})", "",
              "### FD weights' products alone (33 products, "
              f"{tr['products']['weight_bytes'] / 1e6:.1f} MB)", "",
              "| rows | MKL mm ms | oneDNN packed ms | MKL / oneDNN | oneDNN GB/s | oneDNN GFLOP/s | one read (sum) ms, GB/s |",
              "|---|---|---|---|---|---|---|"]
        for n in (1, 16, 100):
            p = tr["products"][n]
            read = p.get("weight_read_sum")
            L.append(f"| {n} | {p['mkl']['ms']:.2f} | {p['onednn']['ms']:.2f} | **{p['mkl']['ms'] / p['onednn']['ms']:.2f}x** | "
                     f"{p['onednn']['GB_per_s']:.1f} | {p['onednn']['GFLOP_per_s']:.1f} | "
                     + (f"{read['ms']:.2f}, {read['GB_per_s']:.1f} |" if read else "- |"))
        L += ["", "The same products in bfloat16 (precision=bf16; ms): "
              + "; ".join(f"{n} row(s) torch mm {tr['products'][n]['bf16_mm']['ms']:.2f}, oneDNN packed "
                          f"{tr['products'][n]['bf16_onednn']['ms']:.2f}" for n in (1, 16, 100))]
        if "fd_b1" in tr:
            f = tr["fd_b1"]
            L += ["", "### FD stage at batch 1, taken apart (median ms)", "",
                  "| part | MKL | oneDNN | MKL / oneDNN |", "|---|---|---|---|"]
            for part in ("predict", "prefix", "step", "step_products", "step_other", "attention", "per_token_rest",
                         "sum_of_parts"):
                L.append(f"| {part} | {f['mkl'][part]:.2f} | {f['onednn'][part]:.2f} | {f['mkl'][part] / f['onednn'][part]:.2f}x |")
            if "predict_steps_1_thread" in f["onednn"]:
                one = f["onednn"]["predict_steps_1_thread"]
                L += ["", f"- oneDNN with the one-token steps on 1 thread (prefix on {t}): predict {one:.2f} ms, "
                          f"{f['onednn']['predict'] / one:.2f}x the speed of all steps on {t} threads"]
        if "other_stages_b1" in tr:
            o = tr["other_stages_b1"]
            L += ["", "### The other stages (median ms)", "", "| stage | MKL | oneDNN | MKL / oneDNN |", "|---|---|---|---|"]
            for name in dict.fromkeys(k.split(":")[0] for k in o):
                L.append(f"| {name} | {o[name + ':mkl']:.2f} | {o[name + ':onednn']:.2f} | "
                         f"{o[name + ':mkl'] / o[name + ':onednn']:.2f}x |")
        L += ["", "### FD prediction and `act` (median ms)", "", "| batch | what | MKL | oneDNN | MKL / oneDNN |", "|---|---|---|---|---|"]
        for key, v in tr.items():
            if key.startswith("batch"):
                for what in ("fd_predict", "act"):
                    a, o = v[f"{what}:mkl"], v[f"{what}:onednn"]
                    L.append(f"| {key[5:]} | {what} | {a:.1f} | {o:.1f} | **{a / o:.2f}x** |")
        if "floor" in tr:
            f, a1 = tr["floor"], tr["batch1"]
            L += ["", f"- issue 17 bandwidth floor of one batch-1 `act` (same turns; MKL matmul probe "
                      f"{f['matmul_GFLOP_per_s']:.1f} GFLOP/s, copy {f['copy_GB_per_s']:.1f} GB/s): "
                      f"{f['bandwidth_floor_ms']:.1f} ms; `act` b=1 MKL {a1['act:mkl'] / f['bandwidth_floor_ms']:.2f}x it, "
                      f"oneDNN **{a1['act:onednn'] / f['bandwidth_floor_ms']:.2f}x**",
                  f"- the same floor with the matmul rate of oneDNN's packed product "
                  f"({f['matmul_onednn_GFLOP_per_s']:.1f} GFLOP/s): {f['bandwidth_floor_onednn_rate_ms']:.1f} ms; "
                  f"`act` b=1 oneDNN {a1['act:onednn'] / f['bandwidth_floor_onednn_rate_ms']:.2f}x it"]
        L.append("")
    return L


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", help="bundle directory (default: a cached random paper bundle)")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--batches", default="1,16")
    p.add_argument("--repeats", type=int, default=6)
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = p.parse_args(argv)
    bundle = Path(a.bundle) if a.bundle else Path(__file__).parent / ".cache" / "random-paper"
    if not (bundle / "config.json").exists():
        subprocess.run([sys.executable, "-m", "amplify", "init", "--preset", "paper", "--out", str(bundle)],
                       check=True, cwd=Path(__file__).resolve().parents[1])
    start = dt.datetime.now(dt.timezone.utc)
    r = {"command": "python -m benchmarks.onednn_linear " + " ".join(sys.argv[1:] if argv is None else argv),
         "date": start.isoformat(timespec="seconds"), "machine": machine_info(),
         **run(bundle, [int(t) for t in a.threads.split(",")], [int(b) for b in a.batches.split(",")], a.repeats)}
    r["load_average_end"] = os.getloadavg()
    lines = [f"# oneDNN packed vs MKL float32 products ({r['date']})", "", f"- command: `{r['command']}`", *report(r),
             f"- load average at the end: {', '.join(f'{v:.2f}' for v in r['load_average_end'])}"]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{start.strftime('%Y%m%d-%H%M')}-onednn-linear"
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps(r, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
