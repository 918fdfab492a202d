"""Issue 17 target 5 as one prepared run on a GPU: the card, ``act`` per batch in float32 and bfloat16,
the batch that serves 64 robots at 10 Hz, ``act`` end to end over the WebSocket, ONNX Runtime's CUDA
provider where it is installed.

    python -m benchmarks.gpu --out DIR                       # on a machine with a GPU (--device cuda)
    python -m benchmarks.gpu --device cpu --quick --out DIR  # the same script on the CPU (its test)

On the device machine, from the repository root (its Python has torch, not the service's web stack:
``benchmarks/gpu_wheels.sh`` downloads those wheels into ``.whl`` beforehand, here; see
docs/performance.md, "GPU"):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \\
        .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD && PYTHONUNBUFFERED=1 python3 -m benchmarks.gpu --out $OUT

Every section is recorded even when another one fails (its error and traceback go into the result), so
one run on a lent machine gives everything it can. Sections:

1. ``card``: the device's name, memory, capability, torch and CUDA versions.
2. ``act``: a random paper bundle (``amplify init --preset paper``, or ``--bundle``), prepared in float32
   and in bfloat16; ``act`` with uint8 images from the host (what a server gets) at each of ``--batches``,
   the two precisions in turns, synchronized with the device: median and p95 ms per call, requests/s.
   For 64 robots at 10 Hz each batch size needs ``ceil(64 / b)`` calls per 100 ms; the smallest batch
   that fits is reported per precision. bf16's FD token agreement with float32 and largest action
   difference on the same random inputs.
3. ``websocket``: ``amplify serve --device D --precision P`` (both precisions, one after the other) and
   openpi's protocol at batch 1 (``benchmarks.protocols.openpi_ws``): round trip, the server's model
   time, the rest; the target is ``act`` under 10 ms end to end.
4. ``onnxruntime``: the ONNX export of the same bundle on ``CUDAExecutionProvider`` (and
   ``TensorrtExecutionProvider`` when present) at batch 1 and 16, when this onnxruntime offers CUDA;
   otherwise the providers it has. (On ``--device cpu``: ``CPUExecutionProvider``.)

Not here: CUDA graphs for the FD step (not implemented; the fused step's per-token launches are what
they would remove, and section 2's batch-1 time against the larger batches shows what is at stake).
Writes ``gpu-<time>.json`` and ``.md`` into ``--out``.
"""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import math
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from benchmarks.common import summarize, utc_stamp, write_results

ROBOTS, HZ = 64, 10.0


def sync(device: str) -> None:
    """Wait for the device's queued work (CUDA kernels run asynchronously)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def card(device: str) -> dict[str, Any]:
    """What the run ran on."""
    out: dict[str, Any] = {"device": device, "torch": torch.__version__, "python": platform.python_version(),
                           "cpu": platform.processor() or platform.machine()}
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(device)
        out.update(name=p.name, memory_gib=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}",
                   multiprocessors=p.multi_processor_count, cuda=torch.version.cuda)
    else:
        out["name"] = "CPU (no GPU)"
    return out


def time_in_turns(fns: dict[str, Callable[[], object]], device: str, repeats: int, warmup: int = 2) -> dict[str, dict]:
    """Each function ``repeats`` times, the functions in turns, each call synchronized with the device."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
        sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: summarize(t) for name, t in times.items()}


def random_inputs(model, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """uint8 images (b, v, H, W, 3), proprio (b, P), text embeddings (b, E), on the host."""
    rng = np.random.default_rng(seed)
    mt = model.cfg.motion_tokenizer
    return {"images": rng.integers(0, 256, (batch, mt.num_views, *mt.img_shape, 3), dtype=np.uint8),
            "proprio": rng.normal(0, 0.25, (batch, model.cfg.inverse_dynamics.proprio_dim)).astype(np.float32),
            "text_emb": rng.normal(0, 1, (batch, model.cfg.forward_dynamics.text_embed_dim)).astype(np.float32)}


def robots_batch(rows: dict[int, dict], robots: int = ROBOTS, hz: float = HZ) -> dict[str, Any]:
    """Per batch size: the time ``ceil(robots / b)`` calls take against the 1 / hz budget; the smallest
    batch that fits (None when none does)."""
    need = {b: math.ceil(robots / b) * r["median_s"] for b, r in sorted(rows.items())}
    fits = [b for b, s in need.items() if s <= 1.0 / hz]
    return {"robots": robots, "hz": hz, "seconds_per_cycle": need, "smallest_batch": fits[0] if fits else None}


def section_act(bundle: str, device: str, batches: list[int], repeats: int) -> dict[str, Any]:
    from amplify import AMPLIFY
    from benchmarks.precision import compare

    base = AMPLIFY.load(bundle, device).eval().requires_grad_(False)
    models = {p: copy.deepcopy(base).prepare_for_inference(p) for p in ("fp32", "bf16", "bf16-all")}
    del base
    out: dict[str, Any] = {"bundle": bundle, "batches": {}}
    with torch.inference_mode():
        for b in batches:
            x = random_inputs(models["fp32"], b, seed=b)
            row = time_in_turns({name: (lambda m=m: m.act(x["images"], x["proprio"], text_emb=x["text_emb"]))
                                 for name, m in models.items()}, device, repeats)
            out["batches"][b] = {name: {**r, "requests_per_s": b / r["median_s"]} for name, r in row.items()}
        checks = [random_inputs(models["fp32"], 4, seed=100 + i) for i in range(2)]
        out["bf16_vs_fp32"] = compare(models["fp32"], models["bf16"], checks)
        out["bf16-all_vs_fp32"] = compare(models["fp32"], models["bf16-all"], checks)
    for name in models:
        out[f"robots_{name}"] = robots_batch({b: r[name] for b, r in out["batches"].items()})
    if device.startswith("cuda"):
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return out


def section_websocket(bundle: str, device: str, repeats: int) -> dict[str, Any]:
    import httpx

    from benchmarks.protocols import openpi_ws
    from benchmarks.server import Server
    from benchmarks.serving import request_fields

    out: dict[str, Any] = {}
    for precision in ("fp32", "bf16"):
        with Server("--model", bundle, "--device", device, "--precision", precision, "--log-format", "text",
                    "log_level=warning") as server:
            act = request_fields(server.meta, "act")
            obs = {f"observation/{v}": act["images"][0, i] for i, v in enumerate(server.meta["views"])}
            obs.update({"observation/state": act["proprio"][0], "text_emb": act["text_emb"][0]})
            call, ws = openpi_ws(server.url, obs)
            try:
                for _ in range(3):
                    call()
                rtt, model = [], []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    parts = call()
                    rtt.append(time.perf_counter() - t0)
                    model.append(parts["model"])
            finally:
                ws.close()
            backend = httpx.get(server.url + "/metadata").json().get("device", device)
        out[precision] = {"round_trip": summarize(rtt), "model": summarize(model),
                          "rest": summarize(list(np.asarray(rtt) - np.asarray(model))), "server_device": backend,
                          "under_10_ms": summarize(rtt)["median_s"] < 0.010}
    return out


def section_onnxruntime(bundle: str, device: str, cache: Path, repeats: int) -> dict[str, Any]:
    import onnxruntime as ort

    providers = ort.get_available_providers()
    out: dict[str, Any] = {"onnxruntime": ort.__version__, "providers": providers}
    if device.startswith("cuda"):
        wanted = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in providers]
    else:  # the script's CPU test runs the same code on the CPU provider
        wanted = ["CPUExecutionProvider"]
    if not wanted:
        out["skipped"] = "this onnxruntime has no CUDA provider (the GPU build is onnxruntime-gpu)"
        return out
    from amplify import AMPLIFY
    from benchmarks.exports import ensure_export
    from exporters.runtime import OnnxModel

    shapes = AMPLIFY.load(bundle)  # for the inputs' shapes
    onnx_dir = ensure_export(bundle, cache / "gpu-onnx", "onnx")
    for provider in wanted:
        model = OnnxModel(onnx_dir, device=device, providers=[provider])
        rows = {}
        for b in (1, 16):
            x = random_inputs(shapes, b, seed=b)
            rows[b] = time_in_turns({"act": lambda x=x: model.act(x["images"], x["proprio"], text_emb=x["text_emb"])},
                                    "cpu", repeats)["act"]  # ONNX Runtime returns host arrays: already synchronized
        out[provider] = rows
    return out


def run_section(result: dict, name: str, fn: Callable[[], dict]) -> None:
    """``result[name] = fn()``, or its error and traceback: one failing section does not stop the run."""
    t0 = time.perf_counter()
    try:
        result[name] = fn()
    except Exception as e:  # recorded, not raised: the run is one shot on a lent machine
        result[name] = {"error": f"{type(e).__name__}: {e}"[:2000], "traceback": traceback.format_exc()[-6000:]}
    result[name]["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"[gpu] {name}: {'error' if 'error' in result[name] else 'done'} in {result[name]['seconds']} s",
          file=sys.stderr, flush=True)


def render(r: dict[str, Any]) -> str:
    c = r["card"]
    lines = [f"# GPU run ({r['time']})", "", f"Command: `{r['command']}`", "",
             f"Card: **{c.get('name')}**" + (f", {c['memory_gib']} GiB, capability {c['capability']}, CUDA {c['cuda']}"
                                             if "memory_gib" in c else "") + f"; torch {c.get('torch')}, Python "
             f"{c.get('python')}", ""]
    for name in ("act", "websocket", "onnxruntime"):
        s = r.get(name, {})
        if "error" in s:
            lines += [f"## {name}: failed", "", "```", s["error"], "```", ""]
    a = r.get("act", {})
    if "batches" in a:
        names = list(next(iter(a["batches"].values())))
        lines += ["## `act` in-process (uint8 images from the host, synchronized)", "",
                  "| batch | " + " | ".join(f"{n} median ms | {n} p95 ms | {n} req/s" for n in names) + " |",
                  "|---" * (1 + 3 * len(names)) + "|"]
        for b, row in a["batches"].items():
            lines.append(f"| {b} | " + " | ".join(f"{row[n]['median_s'] * 1e3:.2f} | {row[n]['p95_s'] * 1e3:.2f} | "
                                                 f"{row[n]['requests_per_s']:.0f}" for n in names) + " |")
        lines.append("")
        for name in names:
            rb = a[f"robots_{name}"]
            lines.append(f"- {rb['robots']} robots at {rb['hz']:g} Hz, {name}: smallest batch that fits "
                         f"**{rb['smallest_batch']}** (ceil({rb['robots']}/b) calls per {1e3 / rb['hz']:.0f} ms: "
                         + ", ".join(f"b={b} {s * 1e3:.1f} ms" for b, s in rb["seconds_per_cycle"].items()) + ")")
        for name in names[1:]:
            q = a.get(f"{name}_vs_fp32")
            if q:
                lines += [f"- {name} against fp32: FD tokens {q['token_agreement'] * 100:.2f} % equal ({q['tokens']}), "
                          f"largest action difference {q['max_abs_action_diff']:.3g}"]
        if "peak_memory_gib" in a:
            lines.append(f"- peak device memory {a['peak_memory_gib']} GiB")
        lines.append("")
    w = r.get("websocket", {})
    if "fp32" in w:
        lines += ["## `act` over openpi's WebSocket, batch 1 (target: under 10 ms end to end)", "",
                  "| precision | round trip median ms | p95 ms | server model ms | rest ms | under 10 ms |", "|---|---|---|---|---|---|"]
        for p in ("fp32", "bf16"):
            x = w[p]
            lines.append(f"| {p} | {x['round_trip']['median_s'] * 1e3:.2f} | {x['round_trip']['p95_s'] * 1e3:.2f} | "
                         f"{x['model']['median_s'] * 1e3:.2f} | {x['rest']['median_s'] * 1e3:.2f} | "
                         f"{'yes' if x['under_10_ms'] else 'no'} |")
        lines.append("")
    o = r.get("onnxruntime", {})
    if o and "error" not in o:
        lines += ["## ONNX Runtime", "", f"onnxruntime {o.get('onnxruntime')}, providers {o.get('providers')}"
                  + (f": {o['skipped']}" if "skipped" in o else ""), ""]
        for provider in ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"):
            if provider in o:
                lines.append(f"- {provider}: " + ", ".join(f"b={b} {t['median_s'] * 1e3:.2f} ms"
                                                           for b, t in o[provider].items()))
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (the target) or cpu (the script's own test)")
    p.add_argument("--bundle", help="bundle directory (default: a random paper bundle, amplify init, in --cache)")
    p.add_argument("--preset", default=None, help="preset of the random bundle (paper; small with --quick)")
    p.add_argument("--batches", default=None, help="section 2's batch sizes (1,2,4,8,16,32,64; 1,2 with --quick)")
    p.add_argument("--repeats", type=int, default=None, help="section 2's timed calls per batch and precision (20)")
    p.add_argument("--ws-repeats", type=int, default=None, help="section 3's timed calls per precision (100)")
    p.add_argument("--sections", default="act,websocket,onnxruntime")
    p.add_argument("--cache", default=str(Path(__file__).parent / ".cache"))
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--quick", action="store_true", help="small preset, few calls (the CPU test)")
    a = p.parse_args(argv)
    a.preset = a.preset or ("small" if a.quick else "paper")
    batches = [int(b) for b in (a.batches or ("1,2" if a.quick else "1,2,4,8,16,32,64")).split(",")]
    repeats = a.repeats or (2 if a.quick else 20)
    ws_repeats = a.ws_repeats or (3 if a.quick else 100)
    cache = Path(a.cache)
    cache.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"time": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                              "command": "python -m benchmarks.gpu " + " ".join(argv if argv is not None else sys.argv[1:])}
    run_section(result, "card", lambda: card(a.device))
    from benchmarks.run_all import bundle_dir

    bundle = str(bundle_dir(a, cache))
    sections = a.sections.split(",")
    if "act" in sections:
        run_section(result, "act", lambda: section_act(bundle, a.device, batches, repeats))
    if "websocket" in sections:
        run_section(result, "websocket", lambda: section_websocket(bundle, a.device, ws_repeats))
    if "onnxruntime" in sections:
        run_section(result, "onnxruntime", lambda: section_onnxruntime(bundle, a.device, cache, repeats))
    write_results(a.out, "gpu-" + utc_stamp(), result, render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
