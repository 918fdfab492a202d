"""Run every benchmark and write a markdown table and JSON.

    python -m benchmarks.run_all [--bundle DIR] [--sections inprocess,...] [--out benchmarks/results]

Without ``--bundle`` a random-weight bundle of the paper's configuration is built in memory
(the same as ``amplify init --preset paper --seed 0``).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import torch

from amplify import AMPLIFY
from amplify.presets import paper
from benchmarks import inprocess
from benchmarks.common import fmt_ms, machine_info, ratio


def render_inprocess(r: dict) -> list[str]:
    lines = ["## 1. In-process `act` and stages (paper configuration)", ""]
    f = r["flops"]
    lines += [
        f"- FLOPs of one `act` (batch 1): cached {f['act_cached'] / 1e9:.1f} GFLOP, "
        f"reference (FD recomputing) {f['act_reference'] / 1e9:.1f} GFLOP",
        f"- Sustained float32 matmul rate: {f['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s -> lower bound for one "
        f"`act`: {fmt_ms(f['act_lower_bound_s'])} ms",
        f"- Cached and reference FD give identical indices: {r['indices_identical']}",
        "",
        "| batch | back end | median ms | p95 ms | speed-up vs reference | x lower bound (b=1) |",
        "|---|---|---|---|---|---|",
    ]
    for b, row in r["act"].items():
        ref = row.get("reference_torch", {}).get("median_s")
        for name, t in row.items():
            sp = f"{ratio(ref, t['median_s']):.1f}x" if ref else "-"
            lb = f"{t['median_s'] / f['act_lower_bound_s']:.2f}" if int(b) == 1 else "-"
            lines.append(f"| {b} | {name} | {fmt_ms(t['median_s'])} | {fmt_ms(t['p95_s'])} | {sp} | {lb} |")
    lines += ["", "| stage | median ms |", "|---|---|"]
    for name, t in r["stages"].items():
        lines.append(f"| {name} | {t if isinstance(t, bool) else fmt_ms(t['median_s'])} |")
    st = r["stages"]
    lines += [
        "",
        f"- FD prediction, cached vs reference: {ratio(st['fd_predict_reference']['median_s'], st['fd_predict_cached']['median_s']):.1f}x",
        f"- MT decode (batch 1), separable vs original form: "
        f"{ratio(st['mt_decode_reference_b1']['median_s'], st['mt_decode_fast_b1']['median_s']):.1f}x; "
        f"(batch 8): {ratio(st['mt_decode_reference_b8']['median_s'], st['mt_decode_fast_b8']['median_s']):.1f}x",
        "",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", help="bundle directory or original amplify.pt (default: random paper bundle)")
    p.add_argument("--sections", default="inprocess")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = AMPLIFY.load(args.bundle) if args.bundle else AMPLIFY(paper()).eval()
    results = {"machine": machine_info(), "command": "python -m benchmarks.run_all " + " ".join(argv or sys.argv[1:]),
               "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    md = ["# Benchmark results", "", f"- command: `{results['command']}`", f"- date: {results['date']}",
          f"- machine: {json.dumps(results['machine'])}", ""]
    sections = args.sections.split(",")
    if "inprocess" in sections:
        results["inprocess"] = inprocess.run(model, repeats=args.repeats)
        md += render_inprocess(results["inprocess"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M")
    (out / f"{stamp}.json").write_text(json.dumps(results, indent=1, default=str))
    (out / f"{stamp}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
