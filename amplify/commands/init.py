"""``amplify init``: a randomly initialized bundle of a preset configuration (benchmarks, capacity planning)."""
from __future__ import annotations

import argparse

import torch

from amplify.config import apply_overrides
from amplify.policy import AMPLIFY
from amplify.presets import PRESETS, preset


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="paper", choices=sorted(PRESETS))
    p.add_argument("--out", required=True, help="output bundle directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. forward_dynamics.num_layers=4")


def run(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    cfg = apply_overrides(preset(args.preset), args.overrides)
    model = AMPLIFY(cfg)
    model.eval()
    model.save(args.out, {"name": f"random-{args.preset}", "trained": False, "seed": args.seed})
    n = sum(p.numel() for p in model.parameters())
    print(f"random {args.preset} bundle ({n:,} parameters) -> {args.out}")
    return 0
