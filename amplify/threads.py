"""CPU threads and OpenMP waiting for the project's commands, so they behave on a shared machine.

Two settings decide how a PyTorch CPU job fares beside another one:

* **OpenMP waiting.** Between parallel regions libgomp's idle threads spin (by default ~300,000
  iterations) before they sleep. Beside another job a spinning thread burns the core the other needs,
  and a thread that lost its core stalls its team at every barrier: a short ``amplify train mt`` took
  4.7x its quiet time beside one busy core. :func:`configure_openmp` sets ``GOMP_SPINCOUNT=10000``
  (a short spin that still covers the gap between two ops, then sleep) unless the user set
  ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``. libgomp reads these once, when torch loads it, so this
  must run before ``import torch``: ``amplify/__init__.py`` calls it first (any program that imports
  ``amplify`` before torch) and so does the command line (``amplify_cli/main.py``) before it loads a
  command's module.
* **Intra-op threads.** :func:`default_threads` is ``AMPLIFY_THREADS`` if set, else
  ``OMP_NUM_THREADS`` if set, else the cores this process may use minus the busy ones (the 1-minute
  load average, rounded), at least 1 and at most torch's own default (the physical cores).
  :func:`apply_threads` sets it; ``amplify`` commands call it before they run (``amplify serve
  --threads N`` still overrides it). A long command re-decides between its stages with
  :class:`CpuMeter`: the load average then counts the command's own threads, which are subtracted, so
  a build that started beside a short-lived job does not stay on one thread for its whole run.

This module never imports torch at import time.
"""
from __future__ import annotations

import math
import os
import sys
import time
from typing import MutableMapping

SPINCOUNT = "10000"


def configure_openmp(env: MutableMapping[str, str] = os.environ) -> bool:
    """Set ``GOMP_SPINCOUNT`` unless the user chose a wait policy; True when it was set now.

    Has no effect on a libgomp that is already loaded (torch imported earlier)."""
    if "OMP_WAIT_POLICY" in env or "GOMP_SPINCOUNT" in env:
        return False
    env["GOMP_SPINCOUNT"] = SPINCOUNT
    return True


def usable_cpus() -> int:
    """Logical CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_threads(env: MutableMapping[str, str] = os.environ, cap: int | None = None, own_load: float = 0.0) -> int:
    """Intra-op threads for a command (see the module docstring); ``cap``: torch's default;
    ``own_load``: the cores this process itself kept busy lately (part of the load average)."""
    for key in ("AMPLIFY_THREADS", "OMP_NUM_THREADS"):
        value = env.get(key, "").strip()
        if value:
            try:
                return max(1, int(value))
            except ValueError:
                raise ValueError(f"{key} must be a positive integer, got {value!r}") from None
    cpus = usable_cpus()
    try:
        busy = max(0.0, os.getloadavg()[0] - own_load)
    except (OSError, AttributeError):
        busy = 0.0
    n = max(1, min(cpus, math.floor(cpus - busy + 0.5)))
    return min(n, cap) if cap else n


def apply_threads(threads: int | None = None, own_load: float = 0.0) -> int:
    """``torch.set_num_threads(threads or default_threads())``; returns the number set."""
    import torch

    n = int(threads) if threads else default_threads(cap=physical_threads(), own_load=own_load)
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


_TORCH_DEFAULT: int | None = None


def physical_threads() -> int:
    """torch's own default intra-op threads (the physical cores), whatever was set since."""
    global _TORCH_DEFAULT
    if _TORCH_DEFAULT is None:
        import torch

        _TORCH_DEFAULT = torch.get_num_threads()
    return _TORCH_DEFAULT


def _cpu_seconds() -> float:
    t = os.times()  # this process and its finished child processes (e.g. data-generation workers)
    return t.user + t.system + t.children_user + t.children_system


class CpuMeter:
    """This process's CPU use between two readings, in cores: its own share of the load average."""

    def __init__(self) -> None:
        self._wall, self._cpu = time.monotonic(), _cpu_seconds()

    def cores(self) -> float:
        """Cores used since the last reading (or creation); starts a new interval."""
        wall, cpu = time.monotonic(), _cpu_seconds()
        used = (cpu - self._cpu) / max(wall - self._wall, 1e-6)
        self._wall, self._cpu = wall, cpu
        return used


def describe() -> str:
    """One line for logs and reports: threads and the OpenMP wait policy in effect."""
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else "(torch not loaded)"
    policy = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in os.environ)
    return f"threads={threads} {policy or 'libgomp default wait'}"
