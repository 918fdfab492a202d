"""``amplify inspect``: what a checkpoint holds (either format), without building anything unsafe."""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from amplify.checkpoints import CheckpointError, detect_format, file_sha256, load_original, read_dir
from amplify.loading import original_kind


def summarize(path: str | Path) -> dict:
    """Format, kind, config, parameter counts per part, file size and hash of a checkpoint."""
    p = Path(path)
    fmt = detect_format(p)
    if fmt == "original":
        data = load_original(p)
        config, state = data.get("config") or {}, data["model"]
        kind = original_kind(config)
        extra = {k: data[k] for k in ("epoch", "train_loss", "val_loss") if k in data}
    else:
        doc, state = read_dir(p)
        config, kind, extra = doc["config"], doc["kind"], {"metadata": doc.get("metadata", {})}
    parts: dict[str, int] = defaultdict(int)
    for key, t in state.items():
        if t.is_floating_point() and not key.endswith((".attn_mask", ".inv_freq")):
            part = key.split(".")[0]
            parts[part] += t.numel()
    size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
    return {"path": str(p), "format": fmt, "kind": kind, "size_bytes": size, "sha256": file_sha256(p),
            "parameters": dict(parts), "total_parameters": sum(parts.values()), "config": config, **extra}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="an original .pt file or a project model directory")
    p.add_argument("--json", action="store_true", help="print the whole summary as JSON")


def run(args: argparse.Namespace) -> int:
    try:
        s = summarize(args.checkpoint)
    except CheckpointError as e:
        raise SystemExit(f"amplify inspect: {e}")
    if args.json:
        print(json.dumps(s, indent=1, default=str))
        return 0
    print(f"{s['path']}\n  format: {s['format']}   kind: {s['kind']}")
    print(f"  size: {s['size_bytes'] / 1e6:.2f} MB   sha256: {s['sha256'][:16]}...")
    print(f"  parameters: {s['total_parameters']:,}")
    for part, n in sorted(s["parameters"].items()):
        print(f"    {part:<24} {n:>12,}")
    print("  config:")
    for line in json.dumps(s["config"], indent=1, default=str).splitlines():
        print("    " + line)
    return 0
