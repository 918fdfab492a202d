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
