"""``amplify serve`` as a subprocess on a free port answers /act."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from tests.service.live import free_port, post, result

REPO = Path(__file__).resolve().parents[2]


def test_amplify_serve_answers_act(small_data, tmp_path):
    path, inp, exp = small_data
    port = free_port()
    env = {**os.environ, "AMPLIFY_HOME": str(tmp_path), "AMPLIFY_MAX_WAIT_MS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "amplify", "serve", "--model", str(path), "--port", str(port),
                             "--threads", "1", "request_timeout_s=60"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.time() < deadline, "amplify serve did not become ready"
            time.sleep(0.2)
        with httpx.Client(base_url=url, timeout=60) as c:
            out = result(post(c, "/act", {"images": inp["images"], "proprio": inp["proprio"], "text_emb": inp["text_emb"]}))
            np.testing.assert_allclose(out["actions"], exp["amp_actions"], atol=1e-4)
            assert c.get("/metadata").json()["batching"]["max_wait_ms"] == 1.0
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode in (0, -15), out  # uvicorn re-raises SIGTERM after a graceful shutdown
    assert '"path": "/act"' in out and '"status": 200' in out  # JSON access log


def test_amplify_serve_exits_nonzero_on_a_missing_model(tmp_path):
    r = subprocess.run([sys.executable, "-m", "amplify", "serve", "--model", str(tmp_path / "nope"), "--port",
                        str(free_port())], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "nope" in r.stderr


def test_amplify_serve_rejects_bad_settings():
    r = subprocess.run([sys.executable, "-m", "amplify", "serve", "max_batch_size=0"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "max_batch_size" in r.stderr


def test_amplify_serve_reports_a_busy_port():
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        r = subprocess.run([sys.executable, "-m", "amplify", "serve", "--port", str(busy.getsockname()[1])], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "cannot listen" in r.stderr
