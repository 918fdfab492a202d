"""One FD decoding step: the fused step (:mod:`amplify.fused_decoder`) vs the trunk's modules, on the
same prepared weights and the same key/value cache, many alternating repeats (robust on a loaded box).

    python -m benchmarks.fused_step --bundle DIR [--batches 1,4,16] [--repeats 200] [--threads 2]

Writes ``benchmarks/results/<stamp>-fused-step.json`` (and prints it): per batch, the median and 10th
percentile ms of each path, and the largest difference of their outputs.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from amplify import AMPLIFY
from benchmarks.common import machine_info


def step_ab(model: AMPLIFY, batch: int, repeats: int = 200, seed: int = 0) -> dict:
    """Time the fused and the module step at the first position after the prefix, alternating the order."""
    fd = model.forward_dynamics
    fused = fd.fused_decoder
    g = torch.Generator().manual_seed(seed)
    h = fd.cfg.hidden_dim
    cond = torch.randn(batch, fd.cfg.cond_seq_len, h, generator=g)
    with torch.no_grad():
        cache = fd.trunk.kv_buffers()
        fd.trunk.forward_cached(torch.cat([cond, fd.sos_token.expand(batch, -1, -1)], 1), cache)
        p = cache[0].length
        code = torch.randn(batch, h, generator=g) * 0.1

        def reset() -> None:
            for buf in cache:
                buf.length = p

        def run_fused() -> torch.Tensor:
            reset()
            return fused.step(code, cache)

        def run_modules() -> torch.Tensor:
            reset()
            return fd.trunk.forward_cached(code[:, None], cache)[0][:, -1]

        diff = float((run_fused() - run_modules()).abs().max())
        times: dict[str, list[float]] = {"fused": [], "modules": []}
        for i in range(repeats):
            order = (("fused", run_fused), ("modules", run_modules)) if i % 2 else (("modules", run_modules), ("fused", run_fused))
            for name, fn in order:
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    out = {k: {"median_s": float(np.median(v)), "p10_s": float(np.percentile(v, 10))} for k, v in times.items()}
    out["max_abs_diff"] = diff
    out["speedup_median"] = out["modules"]["median_s"] / out["fused"]["median_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True)
    p.add_argument("--batches", default="1,4,16")
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = AMPLIFY.load(args.bundle).eval().requires_grad_(False).prepare_for_inference()
    r = {"command": "python -m benchmarks.fused_step " + " ".join(sys.argv[1:] if argv is None else argv),
         "machine": machine_info(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
         "steps": {b: step_ab(model, int(b), args.repeats) for b in args.batches.split(",")}}
    r["load_average_end"] = list(__import__("os").getloadavg())
    text = json.dumps(r, indent=1)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{dt.datetime.now().strftime('%Y%m%d-%H%M')}-fused-step.json").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
