"""A short ``amplify train mt`` alone and beside another PyTorch job, before and after amplify/threads.py.

    python -m benchmarks.shared_cpu [--repeats 2] [--steps 40] [--json FILE]

The competitor is another PyTorch process keeping one core busy (1 thread of 256x256 matmuls, libgomp
defaults). Each setting runs the same training command (a small motion tokenizer on a small
built-in-world dataset written once into ``--cache``), alone then beside the competitor, ``--repeats``
times, alternating; the report is each setting's median wall time beside / alone:

* ``before``: what the command did before amplify/threads.py: libgomp's default spin
  (``GOMP_SPINCOUNT=300000``, its value when there are no more threads than cores) and torch's
  default threads (the physical cores);
* ``after``: the command's own defaults (``GOMP_SPINCOUNT=10000``, ``amplify.threads.default_threads``);
* ``after, N threads``: the short spin with the threads forced to torch's default (``AMPLIFY_THREADS``).

The box is whatever it is: the 1-minute load average is recorded beside each run, and so is the
CPU time (user + system) of each lone run: for one thread it bounds the quiet wall time from below.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMPETITOR = ("import torch\ntorch.set_num_threads(1)\na = torch.randn(256, 256)\n"
              "while True:\n    a = torch.tanh(a @ a)\n")
SCRUB = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "AMPLIFY_THREADS", "MKL_NUM_THREADS")


def make_data(cache: Path) -> Path:
    """A small dataset (builtin_push, 3 demos per task, 16 tracks per view), written once."""
    root = cache / "data"
    if not (root / "builtin_push").is_dir():
        from world.generate import generate
        generate("builtin_push", str(root), demos_per_task=3, num_points=16, horizon=16, workers=1)
    return root


def train_cmd(data: Path, out: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "amplify", "train", "mt", f"data.root={data}",
            "data.track_method=uniform_16_reinit_16", "data.train=[builtin_push:traj1.0]", "data.val=[]",
            f"out={out}", "epochs=1", f"max_steps_per_epoch={steps}", "batch_size=16", "model.num_tracks=16",
            "model.hidden_dim=128", "model.num_layers=2", "model.num_heads=4", "progress=false", "save_every=0"]


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUB}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def timed(cmd: list[str], env: dict[str, str], cpu: list[float] | None = None) -> float:
    """Wall seconds of ``cmd``; appends its CPU seconds (user + system) to ``cpu``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if cpu is not None:
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return wall


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.shared_cpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--steps", type=int, default=40, help="training steps per run")
    p.add_argument("--cache", default="/tmp/amplify-shared-cpu")
    p.add_argument("--settings", default="before,after,after-threads")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    import torch  # only to read its default thread count

    physical = torch.get_num_threads()
    cache = Path(a.cache)
    data = make_data(cache)
    settings = {
        "before": {"GOMP_SPINCOUNT": "300000", "AMPLIFY_THREADS": str(physical)},
        "after": {},
        "after-threads": {"AMPLIFY_THREADS": str(physical)},
    }
    chosen = a.settings.split(",")
    times: dict[str, dict[str, list[float]]] = {s: {"alone": [], "beside": [], "alone_cpu": []} for s in chosen}
    loads: list[float] = []
    cmd = train_cmd(data, cache / "run", a.steps)
    for rep in range(a.repeats):
        for s in chosen:
            env = {**base_env(), **settings[s]}
            loads.append(os.getloadavg()[0])
            times[s]["alone"].append(timed(cmd, env, times[s]["alone_cpu"]))
            comp = subprocess.Popen([sys.executable, "-c", COMPETITOR], env=base_env(),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(1.0)
                loads.append(os.getloadavg()[0])
                times[s]["beside"].append(timed(cmd, env))
            finally:
                comp.kill()
                comp.wait()
            print(f"repeat {rep}: {s}: alone {times[s]['alone'][-1]:.1f} s, beside {times[s]['beside'][-1]:.1f} s",
                  flush=True)
    report = {"command": " ".join(cmd), "cpus": os.cpu_count(), "torch_default_threads": physical,
              "load_average_seen": [min(loads), max(loads)], "settings": settings, "times_s": times}
    print(f"\n{os.cpu_count()} CPUs, torch default threads {physical}, 1-min load average "
          f"{min(loads):.1f}-{max(loads):.1f} during the runs")
    print("| setting | alone (median s) | its CPU time (s) | beside one busy core (median s) | beside / alone |\n"
          "| --- | --- | --- | --- | --- |")
    for s in chosen:
        al, be = statistics.median(times[s]["alone"]), statistics.median(times[s]["beside"])
        cpu = statistics.median(times[s]["alone_cpu"])
        report.setdefault("ratio", {})[s] = be / al
        print(f"| {s} | {al:.1f} | {cpu:.1f} | {be:.1f} | {be / al:.2f}x |")
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
