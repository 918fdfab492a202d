"""Resident memory of a bundle as loaded, as the torch back end prepares it, and after serving.

    python -m benchmarks.prepared_memory --bundle DIR [--precision fp32] [--repeats 2] [--out benchmarks/results]

Two variants, each figure from a fresh process (so that nothing one leaves behind counts for the
other), alternating: ``onednn`` (the default: products on oneDNN's packed weights; a layer packed for
every product keeps no unpacked copy) and ``mkl`` (``AMPLIFY_ONEDNN_LINEAR=0``: MKL's ``mm`` on the
unpacked weights). Each process reports ``VmRSS`` after ``AMPLIFY.load``, after
``prepare_for_inference`` and after 3 ``act`` calls at batch 1, and how many linear layers are packed
and keep no unpacked copy. Writes ``<out>/<time>-prepared-memory.md|json``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {"onednn": "1", "mkl": "0"}  # variant -> AMPLIFY_ONEDNN_LINEAR


def rss_mb() -> float:
    """This process's resident set (``VmRSS``), MB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def measure(bundle: str, precision: str) -> dict:
    """In this process: RSS loaded / prepared / after 3 ``act`` calls, and the linear layers' state."""
    import torch

    from amplify import AMPLIFY
    from amplify.inference import InferenceLinear
    from benchmarks.inprocess import make_inputs

    torch.set_num_threads(1)
    model = AMPLIFY.load(bundle).eval()
    gc.collect()
    loaded = rss_mb()
    model.prepare_for_inference(precision)
    gc.collect()
    prepared = rss_mb()
    x = make_inputs(model, 1)
    with torch.no_grad():
        for _ in range(3):
            model.act(x["images"], x["proprio"], text_emb=x["text_emb"])
    lins = [m for m in model.modules() if isinstance(m, InferenceLinear)]
    return {"loaded_mb": loaded, "prepared_mb": prepared, "after_act_mb": rss_mb(), "linear_layers": len(lins),
            "packed": sum(m.packed is not None for m in lins),
            "unpacked_copy_dropped": sum(m.weight_t is None for m in lins)}


def child(bundle: str, precision: str, variant: str) -> dict:
    env = {**os.environ, "AMPLIFY_ONEDNN_LINEAR": VARIANTS[variant], "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "benchmarks.prepared_memory", "--child", "--bundle", bundle,
                          "--precision", precision], env=env, cwd=REPO, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def render(r: dict) -> str:
    lines = [f"# Prepared memory ({r['time']})", "", f"Command: `{r['command']}`", "",
             f"Bundle: {r['bundle']}; precision {r['precision']}; one fresh process per row", "",
             "| variant | run | loaded MB | prepared MB | prepared - loaded | after 3 act MB | packed / dropped copies / layers |",
             "|---|---|---|---|---|---|---|"]
    for row in r["runs"]:
        lines.append(f"| {row['variant']} | {row['run']} | {row['loaded_mb']:.0f} | {row['prepared_mb']:.0f} | "
                     f"{row['prepared_mb'] - row['loaded_mb']:+.0f} | {row['after_act_mb']:.0f} | "
                     f"{row['packed']} / {row['unpacked_copy_dropped']} / {row['linear_layers']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "bf16-all"])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(measure(a.bundle, a.precision)))
        return 0
    now = dt.datetime.now(dt.timezone.utc)
    r = {"time": now.strftime("%Y-%m-%d %H:%M UTC"), "bundle": a.bundle, "precision": a.precision,
         "command": "python -m benchmarks.prepared_memory " + " ".join(argv if argv is not None else sys.argv[1:]),
         "runs": []}
    for run in range(1, a.repeats + 1):
        for variant in VARIANTS:
            r["runs"].append({"variant": variant, "run": run, **child(a.bundle, a.precision, variant)})
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{now:%Y%m%d-%H%M}-prepared-memory"
    stem.with_suffix(".json").write_text(json.dumps(r, indent=1))
    stem.with_suffix(".md").write_text(render(r))
    print(render(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
