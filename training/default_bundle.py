"""``amplify build-default``: the default bundle from the built-in world, in one command.

    amplify build-default [--out DIR] [--work DIR] [--quick] [--eval-per-task 10]

Steps: generate demonstrations, tracks and text embeddings with the built-in world (LIBERO / AMPLIFY
layouts) -> train the motion tokenizer -> train forward dynamics (frozen MT targets; a frozen
ResNet-18 pretrained on the world's images, seeded random with ``vision.steps=0``; tokens cached) -> train inverse dynamics on the
tokenized true future tracks (``codes=gt``; ``--set id.codes=fd`` trains it on FD's predicted codes
instead) -> bundle with the instruction table -> ``--out`` (default ``amplify.defaults.default_bundle_dir()``, which
``amplify serve`` then serves in place of the shipped build, ``amplify/default_model``). The recipe
builds in 19-21 minutes on 2 cores; its builds L and M served 89.1 % and 85.9 % of the scripted expert's
success on held-out states (run with the sticky gripper it records: ``gripper_hold`` 4; the recipe before it, with
6 tokenizer epochs, 79-88 % over six bundles), and L ships, in float16 and int8, as ``amplify/default_model``
(docs/training.md "The default bundle"); ``--set part.key=value`` changes any of its settings (e.g.
``--set mt.epochs=8``, ``--set id.codes=fd``).
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from amplify.policy import AMPLIFY

SUITE = "builtin_all"
NUM_POINTS = 36  # tracks per view (a 6x6 grid; the paper uses 400)
HORIZON = 16

# part -> key=value overrides of that trainer's config (see training/config.py)
RECIPE: dict[str, dict[str, object]] = {
    # 40 DART demonstrations per task (dart=0.3: the expert's actions perturbed, its corrections recorded, with the
    # expert's tracks), a third of them starting the gripper above an object the task does not move: with the
    # keypoint tokens and the instruction's selection below they serve 79-89 % of the expert on held-out states,
    # 20 plain demonstrations 10/110 (docs/training.md "The default bundle")
    "data": {"demos_per_task": 40, "val_fraction": 0.15, "frame_stride": 2, "dart": 0.3, "dart_tracks": "expert",
             "distractor_starts": 0.33},
    # the vision trunk, pretrained to regress the scene state from both views of the demonstrations and
    # of `scenes` freshly rendered layouts (training/vision_pretrain.py); its state head is saved beside
    # the trunk for `python -m training.perception_bound`; steps=0 keeps the seeded random trunk with
    # calibrated BatchNorm. probe=false / probe_random=false: the ridge probes of the trained and the random
    # trunk encode every demonstration frame (~110 s of this step); `python -m training.vision_pretrain` reports them
    # amp=auto: bfloat16 autocast where the CPU has it natively (AVX512-BF16/AMX: 1.7x less CPU per step, the same
    # held-out error at 480 steps; float32, ~1.7x this step's time, elsewhere), spent on 1200 steps over 12000 scenes
    # head=spatial/levels/pixel_weight: a state head on layer1's and layer2's maps whose first keypoints are fitted
    # to the objects' pixels; they become the encoder's keypoint tokens, which FD and ID read (docs/training.md)
    "vision": {"steps": 1200, "image_size": 64, "batch_size": 32, "lr": 1e-3, "scenes": 12000, "probe": False,
               "probe_random": False, "amp": "auto", "head": "spatial", "levels": [1, 2], "pixel_weight": 5.0},
    "mt": {
        # 16 epochs (14,976 updates): on one build's data the moving points' velocity error fell from 2.51x / 2.58x
        # its grid's (wrist / agentview, 6 epochs, agentview weighted 100) to 1.87x / 2.09x (docs/training.md)
        "epochs": 16, "batch_size": 8, "optim.lr": 2e-3, "optim.warmup_steps": 10, "val_every": 4,  # val: ~6 s each
        "model.num_tracks": NUM_POINTS, "model.hidden_dim": 128, "model.num_heads": 4, "model.num_layers": 2,
        "model.codebook_size": 1024, "model.decoder_mlp_hidden_dim": 64, "model.dropout": 0.0,
        "model.loss_weights": {"agentview": 0.5, "eye_in_hand": 0.5},
        "model.fsq_input_norm": True, "moving_weight": 10.0, "quantizer_lr_scale": 0.1,
        "moving_weights": {"agentview": 200.0},  # agentview's few moving points (~2 %) weighted 201x
    },
    "fd": {
        # 20 epochs (4,680 updates): FD retrained 20 instead of 10 epochs on two builds' data, tokenizer, vision
        # and ID served 178 and 177 of 220 held-out episodes against 173 and 164 (docs/training.md)
        "epochs": 20, "val_every": 5, "batch_size": 32, "optim.lr": 1e-3, "optim.warmup_steps": 20,
        "model.num_heads": 4, "model.num_layers": 3, "model.dropout": 0.0, "model.mask_unused_logits": True,
        "vision.image_size": 128, "val_max_batches": 4,  # image size: only for a random trunk (vision.steps=0)
        # text_select: 4 condition tokens whose weights over the image tokens depend on the instruction alone,
        # restricted to the last 8 tokens of each view (the keypoint tokens): the instruction picks the object
        "model.text_select": 4, "model.text_select_last": 8,
    },
    # codes=gt: an ID trained on FD's codes learnt to ignore them (oracle motion 1/55), one trained on the true
    # codes uses them (oracle 17-23/55); as served both were 0-1/55 after the FD quantizer fix (docs/training.md)
    "id": {
        "epochs": 12, "batch_size": 32, "optim.lr": 1e-3, "optim.warmup_steps": 20, "codes": "gt",
        "model.cond_on_text": True, "model.num_heads": 4, "model.num_layers": 2, "model.dropout": 0.0, "model.head": "gaussian",
        "val_max_batches": 8,
    },
}
EXECUTE = 1  # actions run from each predicted chunk: the recipe's keypoint-token bundles do best at 1 (docs/training.md)
# a changed gripper command kept 4 steps (a sticky gripper, clients.libero.execution.GripperLatch): six bundles of
# the recipe before 16 tokenizer epochs served 174, 189, 193, 177, 186, 187 of 220 held-out episodes with it against 154, 170, 185, 170, 177,
# 178 without; 2, 3, 5, 6, 8 and 12 steps gained less where measured (docs/training.md "A sticky gripper")
GRIPPER_HOLD = 4
QUICK = {  # a smoke run for tests: tiny data, one short epoch each
    "data": {"demos_per_task": 2},
    "vision": {"steps": 0},  # the seeded random trunk (pretraining is tested in tests/training/test_learning.py)
    "mt": {"epochs": 1, "max_steps_per_epoch": 3, "batch_size": 8, "model.hidden_dim": 32},
    "fd": {"epochs": 1, "max_steps_per_epoch": 3, "batch_size": 8, "model.num_layers": 1, "val_max_batches": 1},
    "id": {"epochs": 1, "max_steps_per_epoch": 3, "batch_size": 8, "model.num_layers": 1},
}


def _as_override(key: str, value: object) -> str:
    return f"{key}={json.dumps(value) if not isinstance(value, str) else value}"


def build_default(out: str | Path, work: str | Path, quick: bool = False, sets: list[str] | None = None,
                  workers: int = 2, progress: bool = True) -> dict:
    """Generate, train and bundle; returns a report (timings and the parts' final validation metrics)."""
    from amplify.threads import CpuMeter, apply_threads
    from training.bundle import build_bundle
    from training.train_command import train
    from world.generate import generate, track_method

    meter = CpuMeter()  # re-decides the threads before each stage (a load at the start may have passed)

    recipe = {part: dict(v) for part, v in RECIPE.items()}
    if quick:
        for part, v in QUICK.items():
            recipe[part].update(v)
    for item in sets or []:
        key, value = item.split("=", 1)
        part, sub = key.split(".", 1)
        if part not in recipe:
            raise ValueError(f"--set {item!r}: part must be one of {sorted(recipe)}")
        try:
            recipe[part][sub] = json.loads(value)
        except json.JSONDecodeError:
            recipe[part][sub] = value  # a plain string
    work, out = Path(work), Path(out)
    data_root = work / "data"
    report: dict = {"recipe": recipe, "seconds": {}, "threads": {}}
    t_all = time.perf_counter()

    t = time.perf_counter()
    if data_root.exists():
        shutil.rmtree(data_root)
    stats = generate(SUITE, str(data_root), demos_per_task=int(recipe["data"]["demos_per_task"]),
                     num_points=NUM_POINTS, horizon=HORIZON, workers=workers, dart=float(recipe["data"].get("dart", 0.0)),
                     dart_tracks=str(recipe["data"].get("dart_tracks", "executed")),
                     distractor_starts=float(recipe["data"].get("distractor_starts", 0.0)),
                     shared_starts=bool(recipe["data"].get("shared_starts", False)))
    report["data"] = {"demos": stats["demos"], "steps": stats["steps"]}
    report["seconds"]["generate"] = time.perf_counter() - t
    frac = float(recipe["data"].get("val_fraction", 0.1))

    common = [f"data.root={data_root}", f"data.track_method={track_method(NUM_POINTS, HORIZON)}",
              f"data.frame_stride={int(recipe['data'].get('frame_stride', 1))}",
              f"data.train=[{SUITE}:traj{1 - frac:g}]", f"data.val=[{SUITE}:traj-{frac:g}]",
              f"progress={str(progress).lower()}", "save_every=0"]
    runs = work / "runs"
    vision_file = None
    vis = recipe["vision"]
    if int(vis.get("steps", 0)) > 0:
        from training.data.dataset import AmplifyDataset
        from training.vision_pretrain import SPATIAL_LEVELS, pretrain_vision, render_scenes, save_pretrained

        t = time.perf_counter()
        report["threads"]["vision"] = apply_threads(own_load=meter.cores())
        views = ["agentview", "eye_in_hand"]
        stride, method = int(recipe["data"].get("frame_stride", 1)), track_method(NUM_POINTS, HORIZON)
        sets = [AmplifyDataset(data_root, [sel], views, NUM_POINTS, HORIZON, 1, track_method=method, frame_stride=stride)
                for sel in (f"[{SUITE}:traj{1 - frac:g}]", f"[{SUITE}:traj-{frac:g}]")]
        scenes = render_scenes(SUITE, int(vis["scenes"])) if int(vis.get("scenes", 0)) else None
        enc, vreport = pretrain_vision(sets[0], sets[1], int(vis.get("image_size", 64)), int(vis["steps"]),
                                       int(vis.get("batch_size", 32)), float(vis.get("lr", 1e-3)), progress=progress,
                                       extra=scenes, head=str(vis.get("head", "linear")),
                                       frame=str(vis.get("frame", "absolute")), keypoints=int(vis.get("keypoints", 32)),
                                       position_weight=float(vis.get("position_weight", 1.0)),
                                       probe=bool(vis.get("probe", True)),
                                       probe_random=bool(vis.get("probe_random", True)),
                                       objects=str(vis.get("objects", "slot")), amp=str(vis.get("amp", "off")),
                                       levels=[int(x) for x in vis.get("levels", SPATIAL_LEVELS)],
                                       pixel_weight=float(vis.get("pixel_weight", 0.0)),
                                       pixel_effector=bool(vis.get("pixel_effector", False)))
        del scenes
        # the trunk and its state head (for python -m training.perception_bound); FD/ID read the trunk only
        vision_file = save_pretrained(enc, runs / "vision" / "vision.safetensors")
        report["vision"] = vreport
        report["seconds"]["vision"] = time.perf_counter() - t
    for part in ("mt", "fd", "id"):
        t = time.perf_counter()
        report["threads"][part] = apply_threads(own_load=meter.cores())
        extra = [f"out={runs / part}"]
        if part in ("fd", "id"):
            extra.append(f"mt={runs / 'mt' / 'latest'}")
        if part == "fd" and vision_file is not None:
            extra.append(f"vision.weights={vision_file}")
        if part == "id":
            extra.append(f"vision.weights={runs / 'fd' / 'vision.safetensors'}")
            extra.append(f"fd={runs / 'fd' / 'latest'}")  # used when codes=fd (ID on FD's predicted codes)
        args = [a.replace(":traj", ":action") if part == "id" else a for a in common]  # ID needs actions
        sets_ = {k: v for k, v in recipe[part].items() if k != "val_fraction"}
        if part == "fd" and vision_file is not None:
            # a vision file brings its own input size (training.vision.load_vision): record that one
            sets_["vision.image_size"] = int(vis.get("image_size", 64))
        summary = train(part, args + extra + [_as_override(k, v) for k, v in sets_.items()])
        report[part] = {"val": summary.get("val", {}), "train": summary.get("train", {}), "steps": summary["step"],
                        "train_seconds": summary.get("seconds")}
        report["seconds"][part] = time.perf_counter() - t

    t = time.perf_counter()
    model = build_bundle(runs / "mt" / "latest", runs / "fd" / "latest", runs / "id" / "latest",
                         runs / "fd" / "vision.safetensors", str(data_root), [SUITE])
    report["seconds"]["bundle"] = time.perf_counter() - t
    report["seconds"]["total"] = time.perf_counter() - t_all
    model.metadata["build_report"] = report
    model.metadata["execute"] = EXECUTE  # what `amplify eval-world` runs per chunk unless told
    model.metadata["gripper_hold"] = GRIPPER_HOLD  # and the gripper latch it applies unless told
    if out.exists():
        shutil.rmtree(out)
    model.save(out)
    (out / "build_report.json").write_text(json.dumps(report, indent=1))
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--out", default=None, help="bundle directory (default: $AMPLIFY_HOME/default)")
    parser.add_argument("--work", default=None, help="data and training runs (default: $AMPLIFY_HOME/build-default)")
    parser.add_argument("--quick", action="store_true", help="a smoke run (tiny data and steps; not a useful model)")
    parser.add_argument("--set", action="append", default=[], help="recipe override part.key=value, e.g. mt.epochs=8")
    parser.add_argument("--workers", type=int, default=2, help="processes generating data")
    parser.add_argument("--eval-per-task", type=int, default=0,
                        help="then evaluate closed loop on this many held-out benchmark states per task, beside the "
                             "expert and a random policy, and record the figures in the bundle's metadata")
    parser.add_argument("--eval-execute", type=int, default=EXECUTE,
                        help="with --eval-per-task: actions run from each predicted chunk before the policy is asked "
                             "again (the recipe's keypoint-token bundles do best at 1; recorded in the metadata)")
    parser.add_argument("--eval-gripper-hold", type=int, default=GRIPPER_HOLD,
                        help="with --eval-per-task: steps a changed gripper command is kept (a sticky gripper; the "
                             "recipe's bundles record 4 and do best with it; 0: off)")
    parser.add_argument("--videos", default=None, help="with --eval-per-task: GIFs of a success and a failure per task")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--if-missing", action="store_true", help="do nothing when the bundle already exists")


def run(args: argparse.Namespace) -> int:
    from amplify.defaults import amplify_home, default_bundle_dir

    out = Path(args.out) if args.out else default_bundle_dir()
    work = Path(args.work) if args.work else amplify_home() / "build-default"
    if args.if_missing and (out / "config.json").is_file():
        print(f"{out} exists; not rebuilding (drop --if-missing to rebuild)")
        return 0
    report = build_default(out, work, args.quick, args.set, args.workers, not args.no_progress)
    sec = report["seconds"]
    print(f"wrote {out} in {sec['total']:.0f} s (" + ", ".join(f"{k} {v:.0f} s" for k, v in sec.items() if k != "total") + ")")
    for part in ("mt", "fd", "id"):
        print(f"  {part}: " + " ".join(f"{k}={v:.4g}" for k, v in report[part]["val"].items()))
    if args.eval_per_task:
        summary = evaluate_default(out, args.eval_per_task, progress=not args.no_progress, videos=args.videos,
                                   execute=args.eval_execute, gripper_hold=args.eval_gripper_hold)
        print(summary["table"])
    return 0


def evaluate_default(out: Path, per_task: int, progress: bool = True, videos: str | None = None,
                     execute: int = EXECUTE, gripper_hold: int = GRIPPER_HOLD) -> dict:
    """Closed loop on the benchmark's held-out initial states (every task, ``per_task`` states each),
    beside the scripted expert and a random policy on the same episodes; writes
    ``<out>/eval_world.json`` and puts the summary into the bundle's metadata (so ``/metadata``
    serves it). ``execute``: actions run from each predicted chunk; ``gripper_hold``: the model's
    gripper latch (the baselines run without one). Returns the summary."""
    from amplify.policy import AMPLIFY

    model = AMPLIFY.load(out)
    summary, results = evaluate_bundle(model, per_task, f"--model {out} ", progress, execute, gripper_hold)
    (out / "eval_world.json").write_text(json.dumps(results, indent=1))
    if videos:
        from training.eval_world import save_videos

        save_videos(results["model"], videos, "model")
    model.save(out)
    return summary


def evaluate_bundle(model: AMPLIFY, per_task: int, model_args: str = "", progress: bool = True, execute: int = EXECUTE,
                    gripper_hold: int = GRIPPER_HOLD) -> tuple[dict, dict]:
    """``evaluate_default``'s closed loop for a loaded bundle: sets ``model.metadata["evaluation"]`` to the
    summary (``model_args`` is how the recorded command names the model) and returns (summary with the
    printable ``table``, the full results of the model, the expert and the random policy)."""
    from training.eval_world import ExpertPolicy, bundle_policy, evaluate, format_report, random_policy

    torch.manual_seed(0)
    kw = dict(suite=SUITE, per_task=per_task, progress=progress)
    results = {"model": evaluate(bundle_policy(model), views=tuple(model.views), name="model", execute=execute,
                                 gripper_hold=gripper_hold, **kw),
               "expert": evaluate(ExpertPolicy(), name="expert", **kw),
               "random": evaluate(random_policy(0), name="random", **kw)}
    summary = {
        "command": f"amplify eval-world {model_args}--per-task {per_task} --execute {execute} "
                   f"--gripper-hold {gripper_hold}",
        "episodes_per_task": per_task, "execute": execute, "gripper_hold": gripper_hold, "init_states": "benchmark states 0..%d of each task (never used by demonstrations)" % (per_task - 1),
        **{name: {"success_rate": r["success_rate"], "per_family": r["per_family"], "per_task": r["per_task"]}
           for name, r in results.items()},
    }
    if results["expert"]["success_rate"] > 0:
        summary["model_over_expert"] = results["model"]["success_rate"] / results["expert"]["success_rate"]
    model.metadata["evaluation"] = summary
    return {**summary, "table": format_report(results)}, results
