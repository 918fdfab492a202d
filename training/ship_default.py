"""``python -m training.ship_default BUNDLE``: the default model shipped with the package, from a build.

    python -m training.ship_default ~/.cache/amplify-serve/default [--out amplify/default_model] [--per-task 20]

The package ships one bundle built by ``amplify build-default`` (``amplify/default_model``), so that
``amplify serve`` serves a trained policy minutes after install: the build itself takes 19-21 minutes
on 2 cores. ``amplify build-default`` rebuilds it from nothing, and ``amplify serve`` then serves that
build instead (``amplify.defaults.default_model_dir``).

This writes BUNDLE's weights as float16, the vision trunk's two last stages as per-channel int8 (17.5 MB
against 28 MB all-float16; loading turns them back into float32), evaluates
exactly those weights closed loop on the benchmark's held-out initial states beside the scripted expert
and a random policy and records that in the metadata (what ``/metadata`` serves), replaces the build
machine's paths in the metadata by ``<work>/...``, and records where the bundle came from (``shipped``).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import torch

SHIPPED_NAME = "default-shipped"
WEIGHTS_DTYPE = torch.float16
# the vision trunk's layer3 and layer4 kernels (10.5 M of its 11.2 M weights) as per-channel int8: the file stays
# under 20 MB; layer1/2, whose maps give the keypoint tokens, stay float16
INT8_PREFIXES = ("img_encoder.model.6.", "img_encoder.model.7.")


def round_weights(model: torch.nn.Module, dtype: torch.dtype = WEIGHTS_DTYPE,
                  int8_prefixes: tuple[str, ...] = INT8_PREFIXES) -> None:
    """Round the model's saved floating-point state (its state dict) in place (it stays float32) to the numbers
    a bundle saved with ``weights_dtype=dtype, int8_prefixes=int8_prefixes`` loads back."""
    from amplify.checkpoints import quantize_int8, stored_as_int8

    with torch.no_grad():
        for key, t in model.state_dict().items():  # views of the parameters and persistent buffers
            if stored_as_int8(key, t, int8_prefixes):
                q, scale = quantize_int8(t)
                t.copy_(q.float() * scale.float())
            elif t.is_floating_point():
                t.copy_(t.to(dtype).to(t.dtype))


def work_paths_replaced(obj: Any, work: str) -> Any:
    """``obj`` with every string that starts with the directory ``work`` rewritten to start with ``<work>``."""
    if isinstance(obj, dict):
        return {k: work_paths_replaced(v, work) for k, v in obj.items()}
    if isinstance(obj, list):
        return [work_paths_replaced(v, work) for v in obj]
    if isinstance(obj, str) and (obj == work or obj.startswith(work + os.sep)):
        return "<work>" + obj[len(work):]
    return obj


def build_work_dir(metadata: dict[str, Any]) -> str | None:
    """The build's work directory: the common directory of its parts and its data (None if it recorded none)."""
    paths = list((metadata.get("parts") or {}).values())
    data = (metadata.get("instruction_source") or {}).get("data")
    paths += [data] if data else []
    paths = [p for p in paths if isinstance(p, str) and os.path.isabs(p)]
    return os.path.commonpath(paths) if paths else None


def ship(bundle: Path, out: Path, per_task: int = 20, progress: bool = True) -> dict:
    """Write ``out`` from the built ``bundle`` (see the module's docstring); returns the evaluation summary."""
    from amplify.checkpoints import file_sha256
    from amplify.policy import AMPLIFY
    from training.default_bundle import evaluate_bundle

    model = AMPLIFY.load(bundle)
    built = dict(model.metadata)
    if "build_report" not in built:
        raise ValueError(f"{bundle}: not a bundle written by `amplify build-default` (its metadata has no build_report)")
    round_weights(model)
    summary, _ = evaluate_bundle(model, per_task, "--model amplify/default_model ", progress,
                                 int(built.get("execute", 1)), int(built.get("gripper_hold", 0)))
    work = build_work_dir(built)
    metadata = work_paths_replaced(dict(model.metadata), work) if work else dict(model.metadata)
    build_eval = built.get("evaluation") or {}
    metadata["name"] = SHIPPED_NAME
    metadata["shipped"] = {
        "from": "one build of `amplify build-default --eval-per-task 20` (recipe: training/default_bundle.py RECIPE; "
                "rebuild it with `amplify build-default`)",
        "weights": f"{str(WEIGHTS_DTYPE).removeprefix('torch.')}, the kernels under {list(INT8_PREFIXES)} per-channel int8 "
                   "(the build's float32 weights rounded; loaded as float32)",
        "made_by": f"python -m training.ship_default BUNDLE --per-task {per_task}",
        "build_weights_sha256": file_sha256(bundle / "model.safetensors"),
        "build_success_rate": (build_eval.get("model") or {}).get("success_rate"),
        "build_evaluation_command": (build_eval.get("command") or "").replace(str(bundle), "BUNDLE") or None,
    }
    model.metadata = metadata
    model.save(out, weights_dtype=WEIGHTS_DTYPE, int8_prefixes=INT8_PREFIXES)
    return summary


def main(argv: list[str] | None = None) -> int:
    from amplify.defaults import shipped_bundle_dir

    parser = argparse.ArgumentParser(prog="python -m training.ship_default", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", help="a bundle written by `amplify build-default`")
    parser.add_argument("--out", default=None, help="where to write it (default: the package's amplify/default_model)")
    parser.add_argument("--per-task", type=int, default=20, help="held-out benchmark states per task to evaluate on")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    from amplify.threads import apply_threads

    apply_threads()  # threads for a shared machine (amplify/threads.py), as the amplify commands do
    out = Path(args.out) if args.out else shipped_bundle_dir()
    summary = ship(Path(args.bundle), out, args.per_task, not args.no_progress)
    print(summary["table"])
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
