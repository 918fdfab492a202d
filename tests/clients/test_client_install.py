"""The client distribution (``pip install ./clients``) in a fresh virtual environment: it installs
numpy, httpx, msgpack and the tools' few packages, never torch; the client talks to a live server,
and the ``amplify-libero`` and ``amplify-tokenize`` commands run.

The venv is made once per test session (about 10-30 s: the packages come from the registry or a
local wheel cache); the test skips, saying why, when pip cannot reach a registry."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _bin(env_dir: Path, name: str) -> Path:
    return env_dir / ("Scripts" if os.name == "nt" else "bin") / name


@pytest.fixture(scope="session")
def client_venv(tmp_path_factory) -> Path:
    """A fresh venv with ``pip install <copy of clients/>``; skips when the packages cannot be fetched."""
    root = tmp_path_factory.mktemp("client_install")
    src = root / "clients"  # a copy: pip's in-tree build leaves build/ and *.egg-info behind
    shutil.copytree(REPO / "clients", src, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    r = subprocess.run([str(_bin(env_dir, "python")), "-m", "pip", "install", "--quiet", str(src)],
                       capture_output=True, text=True, env=env, timeout=600)
    if r.returncode != 0:
        text = (r.stderr + r.stdout)[-2000:]
        if any(s in text for s in ("No matching distribution", "Could not find a version", "NewConnectionError",
                                   "Temporary failure in name resolution", "Network is unreachable")):
            pytest.skip(f"pip cannot fetch the client's dependencies (no registry reachable):\n{text}")
        pytest.fail(f"pip install ./clients failed:\n{text}")
    return env_dir


def _run(env_dir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    # Run outside the repository so that nothing but the installed distribution can be imported.
    return subprocess.run(list(args), capture_output=True, text=True, env=env, cwd=env_dir, timeout=timeout)


def test_client_distribution_installs_and_runs_without_torch(client_venv, server):
    py = str(_bin(client_venv, "python"))
    listed = _run(client_venv, py, "-m", "pip", "list", "--format=freeze").stdout.lower()
    installed = {line.split("==")[0] for line in listed.splitlines()}
    assert "amplify-serve-client" in installed
    assert not installed & {"torch", "amplify-serve", "fastapi", "onnxruntime", "uvicorn"}, installed

    script = textwrap.dedent(f"""
        import sys
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("torch is importable in the client's venv")
        import numpy as np
        import clients
        from clients import AmplifyClient
        assert "site-packages" in clients.__file__, clients.__file__
        with AmplifyClient({server.url!r}, api_key={server.api_key!r}, expect_action_dim=7) as c:
            meta = c.metadata()
            v, (h, w) = len(meta["views"]), meta["image_size"]
            images = np.zeros((v, h, w, 3), np.uint8)
            actions = c.act(images, np.zeros(meta["proprio_dim"], np.float32),
                            text_emb=np.zeros(meta["text_embedding_dim"], np.float32))
            tracks = np.zeros((v, meta["track_horizon"], meta["num_tracks"], 2), np.float32)
            indices = c.encode(tracks)["indices"]
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "amplify", "service", "fastapi"))
        assert not heavy, heavy
        print(actions.shape, indices.shape)
    """)
    r = _run(client_venv, py, "-c", script)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split("\n")[0].startswith("(16, 7) (15,)"), r.stdout

    for command in ("amplify-libero", "amplify-tokenize"):
        r = _run(client_venv, str(_bin(client_venv, command)), "--help")
        assert r.returncode == 0 and "usage:" in r.stdout, (command, r.stderr[-2000:])
