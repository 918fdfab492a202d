"""``amplify bundle``: join trained parts into one servable bundle.

    amplify bundle --mt runs/mt/latest --fd runs/fd/latest --id runs/id/latest \\
                   --vision runs/fd/vision.safetensors --out models/mine [--data DATA --suite builtin_all]

The bundle carries the vision encoder's exact weights and the instruction table (instructions and
their text embeddings from ``<data>/<suite>/text/*.hdf5``; by default the suites the FD run trained
on), so ``act`` and the service accept ``text``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from amplify.checkpoints import file_sha256
from amplify.config import BundleConfig
from amplify.loading import load_forward_dynamics, load_inverse_dynamics, load_motion_tokenizer
from amplify.policy import AMPLIFY
from training.data.selection import parse_selection
from training.data.text import read_text_embedding
from training.vision import load_vision


def instruction_table(root: str | Path, suites: list[str]) -> tuple[list[str], np.ndarray]:
    """Instructions (n,) and embeddings (n, E) of every task with a text file in the suites."""
    names, embs, seen = [], [], set()
    for suite in suites:
        files = sorted((Path(root) / suite / "text").glob("*.hdf5"))
        if not files:
            raise FileNotFoundError(f"no text embeddings in {Path(root) / suite / 'text'}")
        for f in files:
            emb, instr = read_text_embedding(root, suite, f.stem)
            instr = instr or f.stem.replace("_", " ")
            if instr not in seen:
                seen.add(instr)
                names.append(instr)
                embs.append(emb)
    return names, np.stack(embs)


def _training_data(part_dir: Path) -> tuple[str, list[str]] | None:
    """(data root, suites) from a run's saved train_config.json, if there."""
    f = part_dir / "train_config.json"
    if not f.is_file():
        return None
    cfg = json.loads(f.read_text())
    data = cfg.get("data", {})
    return data.get("root"), sorted({s.suite for s in parse_selection(data.get("train", []))})


def build_bundle(mt: str | Path, fd: str | Path, idm: str | Path, vision: str | Path,
                 data_root: str | None = None, suites: list[str] | None = None) -> AMPLIFY:
    """An AMPLIFY bundle from trained part directories and a vision-weights file."""
    mt_model, mt_cfg = load_motion_tokenizer(mt)
    fd_model, fd_cfg = load_forward_dynamics(fd, mt_cfg)
    id_model, id_cfg = load_inverse_dynamics(idm, mt_cfg)
    enc = load_vision(vision)
    model = AMPLIFY(BundleConfig(mt_cfg, fd_cfg, id_cfg, vision=enc.cfg), init=False)
    model.motion_tokenizer.load_state_dict(mt_model.state_dict())
    model.forward_dynamics.load_state_dict({k: v for k, v in fd_model.state_dict().items() if not k.startswith("quantize.")}, strict=False)
    model.inverse_dynamics.load_state_dict(id_model.state_dict())
    model.img_encoder.load_state_dict(enc.state_dict())
    if data_root is None or not suites:
        found = _training_data(Path(fd))
        if found is None:
            raise ValueError(f"{fd} has no train_config.json: pass --data and --suite for the instruction table")
        data_root, suites = data_root or found[0], suites or found[1]
    names, embs = instruction_table(data_root, suites)
    model.set_instructions(names, embs)
    model.metadata = {
        "source": "amplify bundle",
        "parts": {"mt": str(mt), "fd": str(fd), "id": str(idm), "vision": str(vision)},
        "vision_sha256": file_sha256(vision),
        "vision_note": enc.note,
        "instruction_source": {"data": str(data_root), "suites": list(suites)},
    }
    return model.eval()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--mt", required=True, help="motion tokenizer directory (e.g. runs/mt/latest)")
    parser.add_argument("--fd", required=True, help="forward dynamics directory")
    parser.add_argument("--id", required=True, dest="idm", help="inverse dynamics directory")
    parser.add_argument("--vision", required=True, help="vision.safetensors written by the FD/ID trainer")
    parser.add_argument("--out", required=True, help="bundle directory to write")
    parser.add_argument("--data", default=None, help="dataset root for the instruction table (default: the FD run's)")
    parser.add_argument("--suite", action="append", default=None, help="suite(s) whose text embeddings to carry")


def run(args: argparse.Namespace) -> int:
    model = build_bundle(args.mt, args.fd, args.idm, args.vision, args.data, args.suite)
    model.save(args.out)
    print(f"wrote {args.out}: {len(model.instructions)} instructions, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
    return 0
