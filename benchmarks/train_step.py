"""Training steps of the default build, side by side: each change to the step against the step without it,
on the same weights and batch, in alternating turns (robust on a loaded box).

    python -m benchmarks.train_step [--repeats 30] [--out benchmarks/results]

* ``vision``: one step of the vision pretraining (ResNet-18 at 64 px, 32 samples x 2 views, layer1/layer2 maps
  read, bfloat16 autocast where the CPU has it natively, as ``vision.amp=auto``): the trunk in the default
  layout with the per-tensor AdamW (before) against channels-last with the fused AdamW (now).
* ``mt``: one step of the motion tokenizer's trainer at the recipe's size (36 tracks x 2 views, horizon 16,
  hidden 128, batch 8, ``MTLoss``, the loop's per-tensor AdamW): zero-probability ``nn.Dropout`` modules
  (before) against the identity (now).

Threads as every project command sets them (:func:`amplify.threads.apply_threads`). Writes
``<out>/<stamp>-train-step.json`` and ``.md``: the median step of each variant and their ratio.
"""
from __future__ import annotations

import argparse
import copy
from typing import Callable

import torch
import torch.nn as nn

from benchmarks.common import fmt_ms, machine_info, ratio, time_interleaved, utc_stamp, write_results


def vision_steps(batch: int = 32, views: int = 2, size: int = 64) -> dict[str, Callable[[], object]]:
    """The vision pretraining's step before (default layout, per-tensor AdamW) and now (channels-last, fused)."""
    from amplify.devices import native_bf16
    from amplify.models.vision import resnet18_trunk, trunk_features

    torch.manual_seed(0)
    x = torch.rand(batch * views, size, size, 3).permute(0, 3, 1, 2)  # as the loop's permuted uint8 frames
    bf16 = native_bf16("cpu")

    def make(channels_last: bool) -> Callable[[], object]:
        trunk = resnet18_trunk()
        inp = x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()
        if channels_last:
            trunk.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(trunk.parameters(), lr=1e-4, weight_decay=1e-4, fused=channels_last or None)

        def step() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                feats, maps = trunk_features(trunk, inp, [1, 2])
            loss = feats.float().pow(2).mean() + sum(m.float().pow(2).mean() for m in maps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    return {"before": make(False), "now": make(True)}


def mt_models() -> tuple[nn.Module, nn.Module]:
    """The recipe-sized MT twice, the same weights: as built before (zero dropouts as ``nn.Dropout``
    modules) and now (the identity, :func:`amplify.layers.dropout_layer`)."""
    from amplify.config import MotionTokenizerConfig
    from amplify.models.motion_tokenizer import MotionTokenizer

    torch.manual_seed(0)
    cfg = MotionTokenizerConfig(num_tracks=36, hidden_dim=128, num_heads=4, num_layers=2, codebook_size=1024,
                                decoder_mlp_hidden_dim=64, dropout=0.0, fsq_input_norm=True,
                                loss_weights={"agentview": 0.5, "eye_in_hand": 0.5})
    now = MotionTokenizer(cfg)
    before = copy.deepcopy(now)
    for module in before.modules():  # what nn.Dropout(0.0) cost before amplify.layers.dropout_layer
        for name, child in module.named_children():
            if isinstance(child, nn.Identity):
                setattr(module, name, nn.Dropout(0.0))
    return before, now


def mt_steps(batch: int = 8) -> dict[str, Callable[[], object]]:
    """The MT trainer's step before (zero dropouts as modules) and now (the identity); per-tensor AdamW both."""
    from training.trainers.mt import MTLoss

    before, now = mt_models()
    cfg = now.cfg
    g = torch.Generator().manual_seed(1)
    start = torch.rand(batch, 2, 1, 36, 2, generator=g) * 1.6 - 0.8
    steps = torch.randint(-3, 4, (batch, 2, cfg.true_horizon - 1, 36, 2), generator=g).float() / 64
    data = {"tracks": torch.cat([start, start + steps.cumsum(2)], dim=2)}

    def make(mt: nn.Module) -> Callable[[], object]:
        module = MTLoss(mt.train(), moving_weight=10.0, moving_weights={"agentview": 100.0})
        opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)

        def step() -> None:
            loss, _ = module(data)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    return {"before": make(before), "now": make(now)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=30, help="alternating turns per variant")
    p.add_argument("--out", default="benchmarks/results")
    a = p.parse_args(argv)
    from amplify.threads import apply_threads

    apply_threads()
    result: dict = {"machine": machine_info(), "repeats": a.repeats}
    lines = ["# Training steps: before / now, side by side", "",
             f"`python -m benchmarks.train_step --repeats {a.repeats}`; {result['machine']['cpu']}, "
             f"{result['machine']['torch_threads']} threads", "",
             "| step | before (ms) | now (ms) | before / now |", "| --- | --- | --- | --- |"]
    for name, fns in (("vision", vision_steps()), ("mt", mt_steps())):
        t = time_interleaved(fns, repeats=a.repeats, warmup=3)
        r = ratio(t["before"]["median_s"], t["now"]["median_s"])
        result[name] = {**t, "before_over_now": r}
        lines.append(f"| {name} | {fmt_ms(t['before']['median_s'])} | {fmt_ms(t['now']['median_s'])} | {r:.2f} |")
    write_results(a.out, f"{utc_stamp()}-train-step", result, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
