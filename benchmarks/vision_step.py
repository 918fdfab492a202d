"""One step of the vision pretraining (``training/vision_pretrain.py``) as it was and as it is, side by side
on the same batch, in alternating turns (robust on a loaded box).

    python -m benchmarks.vision_step [--repeats 30] [--out benchmarks/results]

The step: ResNet-18 at 64 px, 32 samples x 2 views, layer1's and layer2's maps read, bfloat16 autocast where
the CPU has it natively (as ``vision.amp=auto``), AdamW. ``before``: the trunk in the default layout with the
per-tensor AdamW; ``now``: channels-last (oneDNN's faster convolution layout on the CPU) with the fused AdamW.
Threads as every project command sets them (:func:`amplify.threads.apply_threads`; ``AMPLIFY_THREADS`` to fix
them). Writes ``<out>/<stamp>-vision-step.json`` and ``.md``: the median step of each and their ratio.
"""
from __future__ import annotations

import argparse
from typing import Callable

import torch

from benchmarks.common import fmt_ms, machine_info, ratio, time_interleaved, utc_stamp, write_results


def vision_steps(batch: int = 32, views: int = 2, size: int = 64) -> dict[str, Callable[[], object]]:
    """The vision pretraining's step before (default layout, per-tensor AdamW) and now (channels-last, fused)."""
    from amplify.devices import native_bf16
    from amplify.models.vision import resnet18_trunk, trunk_features

    torch.manual_seed(0)
    x = torch.rand(batch * views, size, size, 3).permute(0, 3, 1, 2)  # as the loop's permuted frames
    bf16 = native_bf16("cpu")

    def make(channels_last: bool) -> Callable[[], object]:
        torch.manual_seed(0)
        trunk = resnet18_trunk()
        inp = x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()
        if channels_last:
            trunk.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(trunk.parameters(), lr=1e-4, weight_decay=1e-4, fused=channels_last or None)

        def step() -> float:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                feats, maps = trunk_features(trunk, inp, [1, 2])
            loss = feats.float().pow(2).mean() + sum(m.float().pow(2).mean() for m in maps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return float(loss)
        return step

    return {"before": make(False), "now": make(True)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=30, help="alternating turns per variant")
    p.add_argument("--out", default="benchmarks/results")
    a = p.parse_args(argv)
    from amplify.threads import apply_threads

    apply_threads()
    t = time_interleaved(vision_steps(), repeats=a.repeats, warmup=3)
    r = ratio(t["before"]["median_s"], t["now"]["median_s"])
    result = {"machine": machine_info(), "repeats": a.repeats, **t, "before_over_now": r}
    md = "\n".join([
        "# Vision pretraining step: before / now, side by side", "",
        f"`python -m benchmarks.vision_step --repeats {a.repeats}`; {result['machine']['cpu']}, "
        f"{result['machine']['torch_threads']} threads", "",
        "| before (default layout, per-tensor AdamW), ms | now (channels-last, fused AdamW), ms | before / now |",
        "| --- | --- | --- |",
        f"| {fmt_ms(t['before']['median_s'])} | {fmt_ms(t['now']['median_s'])} | {r:.2f} |", ""])
    write_results(a.out, f"{utc_stamp()}-vision-step", result, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
