"""``amplify export``: a bundle or motion tokenizer -> ONNX / TorchScript graphs or a Triton repository."""
from __future__ import annotations

import argparse
import json
import sys

from amplify.checkpoints import CheckpointError
from amplify.config import ConfigError, apply_overrides


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=["onnx", "torchscript", "triton"], default="onnx")
    p.add_argument("--model", required=True,
                   help="a bundle (original amplify.pt or a project directory) or a motion tokenizer (mt.pt or directory)")
    p.add_argument("--out", required=True, help="output directory (graphs + manifest.json)")
    p.add_argument("--int8", action="store_true", help="also write int8 (dynamically quantized) ONNX graphs")
    p.add_argument("--topk", action="store_true",
                   help="also export predict_codes_topk and act_topk (top-k sampling; the runtime supplies the noise)")
    p.add_argument("--graphs", default="", help="comma-separated subset of graphs (default: all the model has)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--name", default="", help="model name for the manifest")
    p.add_argument("overrides", nargs="*",
                   help="key=value export settings, e.g. atol=1e-4 batch_sizes=[1,8] triton_max_batch_size=64")


def run(args: argparse.Namespace) -> int:
    from exporters.export import ExportError, ExportSettings, export_model
    from exporters.parity import ParityError
    from exporters.source import load_source

    try:
        settings = ExportSettings(format=args.format, int8=args.int8, topk=args.topk, opset=args.opset, name=args.name,
                                  graphs=[g for g in args.graphs.split(",") if g])
        settings = apply_overrides(settings, args.overrides)
        settings.check()
        source = load_source(args.model)
        print(f"exporting {source.kind} {args.model} (sha256 {source.sha256[:12]}) as {settings.format} -> {args.out}")
        manifest = export_model(source, args.out, settings, log=lambda s: print("  " + s, flush=True))
    except (CheckpointError, ConfigError, ExportError) as e:
        print(f"amplify export: error: {e}", file=sys.stderr)
        return 2
    except ParityError as e:
        print(f"amplify export: parity check FAILED, no manifest written "
              f"(details in {args.out}/parity_report.json):\n{e}", file=sys.stderr)
        return 1
    total = sum(g["bytes"] for g in manifest["graphs"].values())
    print(f"wrote {len(manifest['graphs'])} graphs ({total / 1e6:.1f} MB) and manifest.json in "
          f"{manifest['export']['seconds']} s; parity passed (max abs diff per graph and batch: "
          f"{json.dumps(manifest['parity']['max_abs_diff'])})")
    return 0
