"""Exact resume (2 epochs straight == 1 epoch, stop, resume 1 more) and a two-process DDP run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.training.conftest import MT_TINY, tiny_overrides
from training.train_command import train

REPO = Path(__file__).resolve().parents[2]
# dropout on, so the restored RNG state matters
RESUME = {**MT_TINY, "epochs": 2, "val_max_batches": 1, "model.dropout": 0.1, "optim.warmup_steps": 2}


def test_resume_continues_exactly(world_root, tmp_path):
    straight = train("mt", tiny_overrides(world_root, tmp_path / "a", **RESUME))
    first = train("mt", tiny_overrides(world_root, tmp_path / "b", stop_after=1, **RESUME))
    assert first["step"] == 3
    resumed = train("mt", tiny_overrides(world_root, tmp_path / "b", resume="true", **RESUME))
    assert straight["step"] == resumed["step"] == 6
    a = load_file(str(tmp_path / "a" / "latest" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "latest" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa = torch.load(tmp_path / "a" / "latest" / "train_state.pt", weights_only=True)
    sb = torch.load(tmp_path / "b" / "latest" / "train_state.pt", weights_only=True)
    assert sa["scheduler"] == sb["scheduler"] and torch.equal(sa["rng"]["torch"], sb["rng"]["torch"])
    # and training did change the weights
    init = train("mt", tiny_overrides(world_root, tmp_path / "c", **{**RESUME, "epochs": 1, "max_steps_per_epoch": 1}))
    c = load_file(str(tmp_path / "c" / "latest" / "model.safetensors"))
    assert init["step"] == 1 and any(not torch.equal(a[k], c[k]) for k in a)


def test_two_process_ddp_on_cpu(world_root, tmp_path):
    """torchrun with two CPU processes (gloo): both ranks step together; rank 0 writes the checkpoint."""
    args = tiny_overrides(world_root, tmp_path / "ddp", **MT_TINY)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "amplify", "train", "mt", *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert '"world_size": 2' in proc.stdout
    assert (tmp_path / "ddp" / "latest" / "model.safetensors").is_file()
    state = torch.load(tmp_path / "ddp" / "latest" / "train_state.pt", weights_only=True)
    assert state["step"] == 3


def test_accumulation_and_bf16_autocast(world_root, tmp_path):
    """batch_size 8 over micro-batches of 4 -> 2 accumulation steps per update; bf16 autocast on the CPU."""
    s = train("mt", tiny_overrides(world_root, tmp_path / "acc", gpu_max_bs=4, amp="bf16", max_steps_per_epoch=2, **MT_TINY))
    assert s["micro_batch"] == 4 and s["accumulation"] == 2 and s["step"] == 2
    assert all(map(lambda v: v == v, s["train"].values()))  # no NaN
