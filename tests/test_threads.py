"""amplify/threads.py: OpenMP waiting set before torch loads, thread defaults that respect the user."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from amplify.threads import configure_openmp, default_threads, usable_cpus

REPO = Path(__file__).resolve().parents[1]


def test_configure_openmp_respects_the_user():
    env: dict[str, str] = {}
    assert configure_openmp(env) and env == {"GOMP_SPINCOUNT": "10000"}
    for user in ({"OMP_WAIT_POLICY": "PASSIVE"}, {"GOMP_SPINCOUNT": "300000"}):
        env = dict(user)
        assert not configure_openmp(env) and env == user


def test_default_threads():
    assert default_threads({"AMPLIFY_THREADS": "3"}) == 3
    assert default_threads({"OMP_NUM_THREADS": "2"}) == 2
    assert default_threads({"AMPLIFY_THREADS": "1", "OMP_NUM_THREADS": "4"}) == 1
    assert 1 <= default_threads({}) <= usable_cpus()
    assert default_threads({}, cap=1) == 1
    with pytest.raises(ValueError, match="AMPLIFY_THREADS"):
        default_threads({"AMPLIFY_THREADS": "many"})


def test_set_before_torch_loads():
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env["PYTHONPATH"] = str(REPO)
    code = ("import sys, os; from amplify import AMPLIFY; assert 'torch' in sys.modules; "
            "print(os.environ['GOMP_SPINCOUNT'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "10000"
    for package in ("amplify", "training", "benchmarks"):  # each entry package configures before importing torch
        src = (REPO / package / "__init__.py").read_text()
        assert "_configure_openmp()" in src, package
        assert "import torch" not in src.split("_configure_openmp()")[0], package


def test_own_load_is_not_counted_as_busy(monkeypatch):
    """A long command re-deciding its threads subtracts its own share of the load average."""
    import amplify.threads as threads

    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.6, 1.0, 1.0))
    assert default_threads({}) == 1  # 1.6 busy cores of 2: one left
    assert default_threads({}, own_load=1.5) == 2  # the busy ones were this process's own
    assert default_threads({}, own_load=5.0) == 2  # never below zero busy


def test_cpu_meter_measures_this_process():
    import time

    from amplify.threads import CpuMeter

    meter = CpuMeter()
    start = time.process_time()
    while time.process_time() - start < 0.1:  # one busy thread: 0.1 CPU-seconds
        pass
    busy = meter.cores()
    time.sleep(0.2)  # idle
    idle = meter.cores()
    assert 0 < busy <= 1.5 and idle < busy
