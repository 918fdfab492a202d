"""``amplify train mt|fd|id key=value ...``: train one model.

    amplify train mt data.root=DATA out=runs/mt epochs=20 model.num_tracks=64 model.hidden_dim=128
    amplify train fd data.root=DATA out=runs/fd mt=runs/mt/latest vision.image_size=64
    amplify train id data.root=DATA out=runs/id mt=runs/mt/latest vision.weights=runs/fd/vision.safetensors model.head=flow
    amplify train mt out=runs/mt16 epochs=16 --from runs/mt   # a saved run's settings, some changed
    torchrun --nproc_per_node 2 -m amplify train mt ...      # DistributedDataParallel

Keys: see training/config.py (``--show-config`` prints them with their values). Checkpoints:
``<out>/latest/`` (resume with ``resume=true``) and ``<out>/epoch_<k>/``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from amplify.config import ConfigError, apply_overrides, from_dict, to_dict
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


def base_config(which: str, source: str | Path | None = None) -> Any:
    """The trainer's defaults, or the settings a run saved: ``source`` is its directory (which holds
    ``train_config.json``) or that file."""
    if source is None:
        return CONFIGS[which]()
    path = Path(source)
    path = path / "train_config.json" if path.is_dir() else path
    if not path.is_file():
        raise ConfigError(f"--from {source}: no {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"--from {path}: not JSON ({e})") from None
    return from_dict(CONFIGS[which], data)


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
    parser.add_argument("--from", dest="base", default=None, metavar="RUN",
                        help="start from the settings a run saved (its directory or its train_config.json)")
    parser.add_argument("--show-config", action="store_true", help="print the resolved config and exit")


def run(args: argparse.Namespace) -> int:
    try:
        cfg = apply_overrides(base_config(args.model, args.base), args.overrides)
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
