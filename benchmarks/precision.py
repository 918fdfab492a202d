"""What the opt-in bfloat16 precision costs on a bundle: FD token agreement with float32, the largest
action difference, and closed-loop success in the built-in world with each precision.

    python -m benchmarks.precision --bundle DIR [--episodes 12] [--out results.json]
    python -m benchmarks.precision --bundle DIR --no-world        # random inputs only (e.g. a random paper bundle)
    python -m benchmarks.precision --bundle DIR --no-world --random-batches 0 --timing 16   # the cost side only
    python -m benchmarks.precision --bundle DIR --no-world --timing 1,16 --timing-repeats 5 --md results.md

With the world, both precisions run the same episodes (held-out init states of the built-in world,
``training.eval_world.evaluate``); agreement and action differences are measured on every observation
the float32 policy saw. Without it (or in addition), on ``--random-batches`` batches of random images.

Beside bf16 (FD and ID in bfloat16, the vision encoder float32), ``bf16_all`` is ``precision="bf16-all"``
(the vision encoder's trunk in bfloat16 too; named ``bf16_vision_bf16`` in results before 2026-12-05),
compared on the same inputs and observations, and in closed loop with the world, to show what keeping the
vision encoder float32 buys. ``--timing B`` times ``act`` at batch B (or each of a comma-separated list)
for float32, bf16 and bf16-all in turns (``benchmarks.common.time_interleaved``): what the float32 vision
encoder costs in speed, side by side.
Each precision runs its CPU products where :func:`amplify.inference.onednn_default` says (bfloat16 on oneDNN's
packed weights; float32 too, except on Intel CPUs: MKL); ``bf16_mm`` is bf16 with ``onednn=False`` (torch's
bfloat16 ``mm``, what bf16 ran before), timed and compared beside them.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from amplify import AMPLIFY
from benchmarks.common import machine_info


def compare(fp32: AMPLIFY, bf16: AMPLIFY, batches: list[dict]) -> dict:
    """Token agreement and action differences of ``bf16`` against ``fp32`` over input batches
    (dicts of images, proprio and text_emb or text)."""
    same = total = 0
    diffs: list[float] = []
    for x in batches:
        kw = {"text": x["text"]} if "text" in x else {"text_emb": x["text_emb"]}
        i32, _ = fp32.predict_codes(x["images"], **kw)
        i16, _ = bf16.predict_codes(x["images"], **kw)
        same += int((i32 == i16).sum())
        total += i32.numel()
        a32 = fp32.act(x["images"], x["proprio"], **kw)
        a16 = bf16.act(x["images"], x["proprio"], **kw)
        diffs.append(float((a32 - a16).abs().max()))
    return {"token_agreement": same / max(total, 1), "tokens": total, "max_abs_action_diff": max(diffs, default=0.0),
            "median_of_per_call_max_action_diff": float(np.median(diffs)) if diffs else 0.0, "calls": len(batches)}


def random_batches(model: AMPLIFY, n: int, batch: int = 4, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    mt = model.cfg.motion_tokenizer
    return [{"images": rng.integers(0, 256, (batch, mt.num_views, *mt.img_shape, 3), dtype=np.uint8),
             "proprio": rng.normal(0, 0.25, (batch, model.cfg.inverse_dynamics.proprio_dim)).astype(np.float32),
             "text_emb": rng.normal(0, 1, (batch, model.cfg.forward_dynamics.text_embed_dim)).astype(np.float32)}
            for _ in range(n)]


def timing(models: dict[str, AMPLIFY], batch: int, repeats: int = 3) -> dict:
    """``act`` at ``batch`` for each model in turns; medians and requests/s over float32."""
    from benchmarks.common import time_interleaved

    x = random_batches(next(iter(models.values())), 1, batch, seed=1)[0]
    row = time_interleaved({name: (lambda m=m: m.act(x["images"], x["proprio"], text_emb=x["text_emb"]))
                            for name, m in models.items()}, repeats=repeats)
    out = {name: {"median_s": r["median_s"], "min_s": r["min_s"], "n": r["n"]} for name, r in row.items()}
    for name in models:
        out[name]["speedup_over_fp32"] = row["fp32"]["median_s"] / row[name]["median_s"]
    return {"batch": batch, **out}


def run(bundle: str, episodes: int = 12, world: bool = True, random_n: int = 4, suite: str = "builtin_all",
        timing_batch: int | list[int] = 0, timing_repeats: int = 3) -> dict:
    base = AMPLIFY.load(bundle).eval().requires_grad_(False)
    fp32 = copy.deepcopy(base).prepare_for_inference("fp32")
    bf16 = copy.deepcopy(base).prepare_for_inference("bf16")
    bf16_mm = copy.deepcopy(base).prepare_for_inference("bf16", onednn=False)
    bf16_all = copy.deepcopy(base).prepare_for_inference("bf16-all")
    out: dict = {"bundle": bundle, "trained": bool(base.metadata.get("trained", True)),
                 "bf16": "FD and ID in bfloat16, vision encoder float32",
                 "bf16_mm": "bf16 with onednn=False (torch's bfloat16 mm)",
                 "bf16_all": "precision bf16-all: FD, ID and the vision encoder's trunk in bfloat16"}
    batches_t = [timing_batch] if isinstance(timing_batch, int) else list(timing_batch)
    models = {"fp32": fp32, "bf16": bf16, "bf16_mm": bf16_mm, "bf16_all": bf16_all}
    for i, b in enumerate(x for x in batches_t if x):
        out["timing" if i == 0 else f"timing_b{b}"] = timing(models, b, timing_repeats)
    if random_n:
        batches = random_batches(base, random_n)
        out["random_inputs"] = compare(fp32, bf16, batches)
        out["random_inputs_bf16_mm"] = compare(fp32, bf16_mm, batches)
        out["random_inputs_bf16_vs_bf16_mm"] = compare(bf16_mm, bf16, batches)
        out["random_inputs_bf16_all"] = compare(fp32, bf16_all, batches)
    if world:
        from training.eval_world import evaluate

        seen: list[dict] = []

        def policy(model: AMPLIFY, record: bool):
            def act(images: np.ndarray, proprio: np.ndarray, instructions: list[str]) -> np.ndarray:
                if record:
                    seen.append({"images": images, "proprio": proprio, "text": list(instructions)})
                return model.act(images, proprio, text=instructions).numpy()
            return act

        views = tuple(base.views)
        for name, model in (("fp32", fp32), ("bf16", bf16), ("bf16_all", bf16_all)):
            t0 = time.perf_counter()
            r = evaluate(policy(model, name == "fp32"), suite, episodes, views=views, progress=False)
            out[f"world_{name}"] = {"success_rate": r["success_rate"], "episodes": episodes,
                                    "seconds": time.perf_counter() - t0}
        out["world_observations"] = compare(fp32, bf16, seen)
        out["world_observations_bf16_all"] = compare(fp32, bf16_all, seen)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True)
    p.add_argument("--episodes", type=int, default=12)
    p.add_argument("--no-world", action="store_true", help="random inputs only")
    p.add_argument("--random-batches", type=int, default=4, help="batches of 4 random inputs (0: none)")
    p.add_argument("--timing", default="0", metavar="B[,B]", help="also time act at batch B (or each), in turns (0: no)")
    p.add_argument("--timing-repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="write the results (JSON) here")
    p.add_argument("--md", default=None, help="also write a short markdown summary here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_start = list(os.getloadavg())
    r = run(args.bundle, args.episodes, not args.no_world, args.random_batches,
            timing_batch=[int(b) for b in args.timing.split(",") if b.strip()], timing_repeats=args.timing_repeats)
    r["load_average_start"] = load_start
    r["machine"] = machine_info()
    r["command"] = "python -m benchmarks.precision " + " ".join(sys.argv[1:] if argv is None else argv)
    r["load_average_end"] = list(os.getloadavg())
    print(json.dumps(r, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(r, indent=1))
    if args.md:
        Path(args.md).write_text("\n".join(summary(r)) + "\n")
    return 0


def summary(r: dict) -> list[str]:
    """A markdown summary: ``act`` medians per batch and model, requests/s over float32, token agreement."""
    lines = [f"# benchmarks.precision: {r['bundle']}", "", f"`{r['command']}`", "",
             f"- load average at start {r.get('load_average_start')}, at end {r.get('load_average_end')}",
             f"- torch threads: {torch.get_num_threads()}", ""]
    rows = [v for k, v in r.items() if k.startswith("timing")]
    if rows:
        names = [k for k in rows[0] if k != "batch"]
        lines += ["| batch | " + " | ".join(f"{n} ms" for n in names) + " | " +
                  " | ".join(f"{n} / fp32 req/s" for n in names if n != "fp32") + " |",
                  "| --- " * (1 + 2 * len(names) - 1) + "|"]
        for t in rows:
            lines.append(f"| {t['batch']} | " + " | ".join(f"{t[n]['median_s'] * 1e3:.1f}" for n in names) + " | " +
                         " | ".join(f"**{t[n]['speedup_over_fp32']:.2f}x**" for n in names if n != "fp32") + " |")
        lines.append("")
    for k, c in r.items():
        if k.startswith("random_inputs") or k.startswith("world_observations"):
            lines.append(f"- {k}: FD tokens {100 * c['token_agreement']:.1f} % equal ({c['tokens']} tokens, "
                         f"{c['calls']} calls), largest action difference {c['max_abs_action_diff']:.4f}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
