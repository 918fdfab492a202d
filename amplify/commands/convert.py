"""``amplify convert``: original checkpoints -> the project's format (safetensors + JSON)."""
from __future__ import annotations

import argparse
from pathlib import Path

from amplify.checkpoints import CheckpointError
from amplify.loading import (
    load_bundle, load_forward_dynamics, load_inverse_dynamics, load_motion_tokenizer, read_checkpoint, save_model,
)
from amplify.policy import AMPLIFY


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", nargs="?", help="an original amplify.pt, mt.pt, fd.pt or id.pt")
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--mt", help="the motion tokenizer mt.pt (needed for fd.pt / id.pt, or to assemble a bundle)")
    p.add_argument("--fd", help="with --mt and --id: assemble a bundle from standalone files")
    p.add_argument("--id", dest="id_", help="with --mt and --fd: assemble a bundle from standalone files")
    p.add_argument("--vision-weights", help="local ResNet-18 weights for an assembled bundle (nothing is downloaded)")
    p.add_argument("--random-vision", action="store_true", help="assembled bundle: keep a random vision encoder")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.fd or args.id_:
        if not (args.mt and args.fd and args.id_):
            raise SystemExit("amplify convert: assembling a bundle needs --mt, --fd and --id")
        model = AMPLIFY.from_parts(args.mt, args.fd, args.id_, args.vision_weights, args.random_vision)
        model.save(out, {"converted_from": [args.mt, args.fd, args.id_]})
        print(f"bundle -> {out}")
        return 0
    if not args.checkpoint:
        raise SystemExit("amplify convert: name a checkpoint (or --mt/--fd/--id)")
    try:
        ckpt = read_checkpoint(args.checkpoint)  # read once
        kind = ckpt.kind
        meta = {"converted_from": str(args.checkpoint)}
        if kind == "bundle":
            load_bundle(ckpt).save(out, meta)
        elif kind == "motion_tokenizer":
            save_model(load_motion_tokenizer(ckpt)[0], out, meta)
        else:
            if not args.mt:
                raise SystemExit(f"amplify convert: {kind} checkpoints need their tokenizer: --mt mt.pt")
            mt_cfg = load_motion_tokenizer(args.mt)[1]
            loader = load_forward_dynamics if kind == "forward_dynamics" else load_inverse_dynamics
            save_model(loader(ckpt, mt_cfg)[0], out, meta)
    except CheckpointError as e:
        raise SystemExit(f"amplify convert: {e}")
    print(f"{kind} -> {out}")
    return 0
