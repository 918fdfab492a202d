"""``amplify train mt|fd|id key=value ...``: train one model.

    amplify train mt data.root=DATA out=runs/mt epochs=20 model.num_tracks=64 model.hidden_dim=128
    amplify train fd data.root=DATA out=runs/fd mt=runs/mt/latest vision.image_size=64
    amplify train id data.root=DATA out=runs/id mt=runs/mt/latest vision.weights=runs/fd/vision.safetensors model.head=flow
    torchrun --nproc_per_node 2 -m amplify train mt ...      # DistributedDataParallel

Keys: see training/config.py (``--show-config`` prints them with their values). Checkpoints:
``<out>/latest/`` (resume with ``resume=true``) and ``<out>/epoch_<k>/``.
"""
from __future__ import annotations

import argparse
import json

from amplify.config import ConfigError, apply_overrides, to_dict
from training.config import FDTrainConfig, IDTrainConfig, MTTrainConfig

CONFIGS = {"mt": MTTrainConfig, "fd": FDTrainConfig, "id": IDTrainConfig}


def make_task(which: str, cfg):
    if which == "mt":
        from training.trainers.mt import MTTask
        return MTTask(cfg)
    if which == "fd":
        from training.trainers.fd import FDTask
        return FDTask(cfg)
    from training.trainers.id import IDTask
    return IDTask(cfg)


def train(which: str, overrides: list[str]) -> dict:
    """Train ``which`` (mt | fd | id) with ``key=value`` overrides; returns the loop's summary."""
    from training.loop import fit
    cfg = apply_overrides(CONFIGS[which](), overrides)
    return fit(make_task(which, cfg), cfg)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("model", choices=sorted(CONFIGS), help="which model to train")
    parser.add_argument("overrides", nargs="*", help="config overrides, key=value (e.g. epochs=5 optim.lr=1e-3)")
    parser.add_argument("--show-config", action="store_true", help="print the resolved config and exit")


def run(args: argparse.Namespace) -> int:
    try:
        cfg = apply_overrides(CONFIGS[args.model](), args.overrides)
    except (ConfigError, TypeError, ValueError) as e:
        print(f"amplify train {args.model}: {e}")
        return 2
    if args.show_config:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    from training.loop import fit
    summary = fit(make_task(args.model, cfg), cfg)
    import os
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: v for k, v in summary.items()}, indent=1, default=str))
    return 0
