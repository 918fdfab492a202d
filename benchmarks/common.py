"""Timing and machine-description helpers shared by the benchmarks."""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np


def time_call(fn: Callable[[], object], repeats: int = 5, warmup: int = 1, min_seconds: float = 0.0) -> dict:
    """Run ``fn`` ``warmup`` times, then at least ``repeats`` times (and ``min_seconds``); seconds per call."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return summarize(times)


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1) -> dict[str, dict]:
    """Time several functions in turns (a, b, c, a, b, c, ...), so that a shared machine's load, which comes
    and goes, weighs on each alike; -> :func:`summarize` per name."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: summarize(t) for name, t in times.items()}


def summarize(times: list[float]) -> dict:
    """Median, min, p50/p95/p99 and count of a list of durations (seconds)."""
    a = np.asarray(times, dtype=np.float64)
    return {
        "median_s": float(np.median(a)),
        "min_s": float(a.min()),
        "p50_s": float(np.percentile(a, 50)),
        "p95_s": float(np.percentile(a, 95)),
        "p99_s": float(np.percentile(a, 99)),
        "mean_s": float(a.mean()),
        "n": int(a.size),
    }


def machine_info() -> dict:
    """CPU model, core count, library versions and thread settings of this run."""
    import torch

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT", "(unset)"),
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    return info


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def utc_stamp() -> str:
    """The time now as results files name it: ``YYYYmmdd-HHMM`` (UTC)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M")


def write_results(out: str | Path, stem: str, result: dict[str, Any], md: str) -> Path:
    """Write ``<out>/<stem>.json`` (``result``) and ``<out>/<stem>.md`` (``md``), print ``md``; -> the JSON path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (out / f"{stem}.md").write_text(md)
    print(md)
    return out / f"{stem}.json"
