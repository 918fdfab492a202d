"""The training loop every trainer shares.

A trainer supplies a :class:`TrainTask`: datasets, a loss module (``forward(batch) -> (loss,
metrics)``; the only module that trains, so DistributedDataParallel wraps it), a validation pass, a
way to save the model and plots. The loop does the rest: AdamW (betas, weight decay on matrices),
cosine schedule with warm-up, gradient accumulation (``batch_size`` over ``gpu_max_bs``), gradient
clipping, mixed precision (fp16 + GradScaler on CUDA, optional bf16), optional ``torch.compile``,
seeding, DDP under ``torchrun`` (DistributedSampler), checkpoints (``latest/`` every epoch and
``epoch_<k>/`` every ``save_every``) and exact resume, tqdm, a CSV log and plots.

Checkpoint directory: ``<out>/latest/`` = the model in the project's format (config.json +
model.safetensors) + ``train_state.pt`` (optimizer, scheduler, scaler, RNG states, epoch, step: only
tensors and plain containers, loaded with ``weights_only=True``) + ``train_config.json``.
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from amplify.config import to_dict
from training.config import TrainConfig

STATE_FILE = "train_state.pt"


# ---------------------------------------------------------------------------------------------
# processes and devices
# ---------------------------------------------------------------------------------------------
@dataclass
class Runtime:
    """Where this process runs: device, rank, world size."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def setup_runtime(device: str = "auto") -> Runtime:
    """Pick the device; join the process group when started by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Runtime(dev, rank, world)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """RNG states as tensors and plain containers (safe for ``torch.load(weights_only=True)``)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def amp_settings(amp: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """-> (autocast dtype or None, whether to use a GradScaler)."""
    if amp == "auto":
        amp = "fp16" if device.type == "cuda" else "off"
    if amp == "off":
        return None, False
    if amp == "bf16":
        return torch.bfloat16, False
    if amp == "fp16":
        if device.type != "cuda":
            raise ValueError("amp=fp16 needs a CUDA device; use amp=bf16 or amp=off on the CPU")
        return torch.float16, True
    raise ValueError(f"amp must be auto, off, bf16 or fp16, got {amp!r}")


# ---------------------------------------------------------------------------------------------
# optimizer and schedule
# ---------------------------------------------------------------------------------------------
def build_optimizer(module: nn.Module, cfg: TrainConfig,
                    lr_scales: dict[nn.Parameter, float] | None = None) -> torch.optim.AdamW:
    """AdamW; weight decay on parameters with 2+ dimensions only (as nanoGPT). ``lr_scales``: a
    learning-rate multiplier for some parameters (their own groups; the schedule applies to all)."""
    scale_of = {id(p): s for p, s in (lr_scales or {}).items() if s != 1.0}
    params = [p for p in module.parameters() if p.requires_grad]
    groups = []
    for scale in [1.0] + sorted(set(scale_of.values())):
        mine = [p for p in params if scale_of.get(id(p), 1.0) == scale]
        lr = cfg.optim.lr * scale
        groups += [{"params": [p for p in mine if p.dim() >= 2], "weight_decay": cfg.optim.weight_decay, "lr": lr},
                   {"params": [p for p in mine if p.dim() < 2], "weight_decay": 0.0, "lr": lr}]
    # not fused: the fused kernel's rounding sent the recipe's MT elsewhere (seed 0, 6 epochs: wrist moving points
    # 1.37 px against 0.95 per-tensor; docs/training.md, "Build time"), to save ~1.5 ms of a ~30 ms MT step
    return torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas))


def cosine_with_warmup(warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine to ``min_ratio`` at ``total``."""
    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


# ---------------------------------------------------------------------------------------------
# the task interface
# ---------------------------------------------------------------------------------------------
class TrainTask:
    """What a trainer supplies to :func:`fit`."""

    name = "task"
    train_set: Dataset
    val_set: Dataset | None = None
    loss_module: nn.Module  # forward(batch) -> (loss, {metric: scalar tensor}); holds the trained model

    def setup(self, rt: Runtime) -> None:
        """Build datasets, models and caches (called after seeding)."""
        raise NotImplementedError

    @property
    def model(self) -> nn.Module:
        """The model that is saved (a MotionTokenizer, ForwardDynamics or InverseDynamics)."""
        raise NotImplementedError

    def lr_scales(self) -> dict[nn.Parameter, float]:
        """Learning-rate multipliers of some parameters (default: none)."""
        return {}

    def prepare(self, batch: dict[str, torch.Tensor], rt: Runtime) -> dict[str, torch.Tensor]:
        """Move a batch to the device and add what it needs (e.g. cached image tokens)."""
        return {k: v.to(rt.device, non_blocking=True) for k, v in batch.items()}

    @torch.no_grad()
    def validate(self, loader: DataLoader, rt: Runtime, max_batches: int) -> dict[str, float]:
        """Validation metrics over ``loader``."""
        return {}

    def save(self, path: Path, metadata: dict[str, Any]) -> None:
        from amplify.loading import save_model
        save_model(self.model, path, metadata)

    def load_weights(self, path: Path) -> None:
        from amplify.checkpoints import read_dir
        _, state = read_dir(path)
        self.model.load_state_dict(state)

    def plot(self, out: Path, epoch: int) -> None:
        """Write task-specific figures (e.g. predicted vs true tracks over the image)."""


# ---------------------------------------------------------------------------------------------
# logging
# ---------------------------------------------------------------------------------------------
class CsvLog:
    """Long-format CSV: time, epoch, step, split, metric, value (one row per metric)."""

    FIELDS = ["time", "epoch", "step", "split", "metric", "value"]

    def __init__(self, path: Path, enabled: bool, truncate_after_step: int | None = None):
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        rows = []
        if path.exists() and truncate_after_step is not None:  # resume: drop rows after the checkpoint
            with open(path) as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= truncate_after_step]
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, self.FIELDS)
            w.writeheader()
            w.writerows(rows)

    def write(self, epoch: int, step: int, split: str, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", newline="") as f:
            w = csv.writer(f)
            now = f"{time.time():.3f}"
            for k, v in metrics.items():
                w.writerow([now, epoch, step, split, k, f"{v:.6g}"])


def _mean_metrics(items: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    keys = items[0].keys()
    return {k: float(torch.stack([torch.as_tensor(m[k], dtype=torch.float32) for m in items]).mean()) for k in keys}


# ---------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------
def fit(task: TrainTask, cfg: TrainConfig) -> dict[str, Any]:
    """Train ``task`` as ``cfg`` says; returns a summary (last train/val metrics, steps, seconds, out)."""
    rt = setup_runtime(cfg.device)
    out = Path(cfg.out)
    if rt.is_main:
        out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    task.setup(rt)  # may fill derived model settings into cfg
    if rt.is_main:
        (out / "train_config.json").write_text(json.dumps(to_dict(cfg), indent=2))
    module = task.loss_module.to(rt.device)

    per_rank = max(1, cfg.batch_size // rt.world_size)
    micro = max(1, min(cfg.gpu_max_bs, per_rank))
    accum = math.ceil(per_rank / micro)
    sampler = DistributedSampler(task.train_set, num_replicas=rt.world_size, rank=rt.rank, shuffle=True,
                                 seed=cfg.seed, drop_last=True)
    loader = DataLoader(task.train_set, batch_size=micro, sampler=sampler, drop_last=True,
                        num_workers=cfg.data.num_workers, pin_memory=rt.device.type == "cuda",
                        persistent_workers=cfg.data.num_workers > 0)
    steps_per_epoch = len(loader) // accum
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    if steps_per_epoch == 0:
        raise ValueError(f"{len(task.train_set)} training samples make no full batch of {cfg.batch_size}")
    total_steps = cfg.epochs * steps_per_epoch
    val_loader = None
    if task.val_set is not None and cfg.val_every:
        val_loader = DataLoader(task.val_set, batch_size=micro, shuffle=False, num_workers=cfg.data.num_workers)

    optimizer = build_optimizer(module, cfg, task.lr_scales())
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_with_warmup(cfg.optim.warmup_steps, total_steps, cfg.optim.min_lr_ratio))
    amp_dtype, use_scaler = amp_settings(cfg.amp, rt.device)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=use_scaler)

    start_epoch, step = 0, 0
    latest = out / "latest"
    if cfg.resume and (latest / STATE_FILE).is_file():
        task.load_weights(latest)
        state = torch.load(latest / STATE_FILE, map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, step = int(state["epoch"]), int(state["step"])
        set_rng_state(state["rng"])
        if rt.is_main:
            print(f"resumed from {latest} at epoch {start_epoch}, step {step}")
    log = CsvLog(out / "log.csv", rt.is_main, truncate_after_step=step if start_epoch else None)

    trained = nn.parallel.DistributedDataParallel(module) if rt.distributed else module
    if cfg.compile:
        trained = torch.compile(trained)
    autocast = (lambda: torch.autocast(rt.device.type, dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext

    summary: dict[str, Any] = {"out": str(out), "steps_per_epoch": steps_per_epoch, "accumulation": accum,
                               "micro_batch": micro, "world_size": rt.world_size}
    t0 = time.perf_counter()
    epochs_run = 0
    for epoch in range(start_epoch, cfg.epochs):
        if cfg.stop_after and epochs_run >= cfg.stop_after:
            break
        sampler.set_epoch(epoch)
        module.train()
        batches = iter(loader)
        window: list[dict[str, torch.Tensor]] = []
        bar = tqdm(range(steps_per_epoch), desc=f"{task.name} epoch {epoch + 1}/{cfg.epochs}",
                   disable=not (cfg.progress and rt.is_main), leave=False)
        for _ in bar:
            step_metrics = []
            for k in range(accum):
                batch = task.prepare(next(batches), rt)
                sync = contextlib.nullcontext() if not rt.distributed or k == accum - 1 else trained.no_sync()
                with sync:
                    with autocast():
                        loss, metrics = trained(batch)
                    scaler.scale(loss / accum).backward()
                step_metrics.append({"loss": loss.detach(), **metrics})
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf"))
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            m = _mean_metrics(step_metrics)
            m["grad_norm"] = float(grad_norm)
            m["lr"] = scheduler.get_last_lr()[0]
            window.append(m)
            bar.set_postfix(loss=f"{m['loss']:.4f}")
            if step % cfg.log_every == 0 or step == total_steps:
                avg = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
                log.write(epoch + 1, step, "train", avg)
                summary["train"] = avg
                window = []
        if window:
            avg = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
            log.write(epoch + 1, step, "train", avg)
            summary["train"] = avg
        epochs_run += 1
        last_epoch = epoch + 1 == cfg.epochs
        if val_loader is not None and rt.is_main and ((epoch + 1) % cfg.val_every == 0 or last_epoch):
            module.eval()
            val = task.validate(val_loader, rt, cfg.val_max_batches)
            log.write(epoch + 1, step, "val", val)
            summary["val"] = val
            if cfg.progress:
                print(f"[{task.name}] epoch {epoch + 1} step {step} " + " ".join(f"{k}={v:.4g}" for k, v in val.items()))
        if rt.is_main:
            meta = {"trainer": task.name, "epoch": epoch + 1, "step": step, "train_config": to_dict(cfg)}
            _save_checkpoint(task, latest, meta, cfg, {
                "epoch": epoch + 1, "step": step, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rng_state()})
            if cfg.save_every and (epoch + 1) % cfg.save_every == 0:
                _save_checkpoint(task, out / f"epoch_{epoch + 1:04d}", meta, cfg, None)
            stopping = last_epoch or bool(cfg.stop_after and epochs_run >= cfg.stop_after)
            if cfg.plots and (stopping or (cfg.plot_every and (epoch + 1) % cfg.plot_every == 0)):
                _plots(task, out, epoch + 1)
        rt.barrier()
    summary.update(step=step, seconds=time.perf_counter() - t0)
    if rt.distributed:
        dist.destroy_process_group()
    return summary


def _save_checkpoint(task: TrainTask, path: Path, meta: dict, cfg: TrainConfig, state: dict | None) -> None:
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        import shutil
        shutil.rmtree(tmp)
    task.save(tmp, meta)
    (tmp / "train_config.json").write_text(json.dumps(to_dict(cfg), indent=2))
    if state is not None:
        torch.save(state, tmp / STATE_FILE)
    if path.exists():
        import shutil
        shutil.rmtree(path)
    tmp.replace(path)


def _plots(task: TrainTask, out: Path, epoch: int) -> None:
    try:
        from training.plots import plot_log
    except ImportError:  # matplotlib missing: plots are optional
        return
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    plot_log(out / "log.csv", plots / "curves.png", title=task.name)
    task.plot(plots, epoch)
