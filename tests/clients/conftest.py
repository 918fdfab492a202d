"""Fixtures for the client tests: a random small bundle that knows the test instructions, and a live
``amplify serve`` on a free port (API key on) serving it."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
API_KEY = "test-key-clients"
# The LIBERO test task (libero_10, task 0) and built-in instructions the bundle is taught.
LIBERO_INSTRUCTION = "put both the alphabet soup and the tomato sauce in the basket"


class LiveServer(NamedTuple):
    url: str
    api_key: str
    repo: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory) -> Path:
    """A random small bundle (views agentview + eye_in_hand, 128x128, 7-d actions) whose instruction
    table holds every built-in instruction and the LIBERO test task's, embedded by the world's hash."""
    import torch

    import world
    from amplify import AMPLIFY
    from amplify.presets import small

    torch.manual_seed(0)
    model = AMPLIFY(small()).eval()
    texts = sorted(set(world.instructions("builtin_all").values()) | {LIBERO_INSTRUCTION})
    emb = torch.stack([torch.from_numpy(world.get_text_embedding(t)) for t in texts])
    model.set_instructions(texts, emb)
    out = tmp_path_factory.mktemp("clients") / "bundle"
    model.save(out, {"name": "clients-test-small"})
    return out


@contextlib.contextmanager
def run_server(bundle_dir: Path, log: Path, *extra: str):
    """Start ``amplify serve`` on a free port (API key on) with ``extra`` flags; yield a LiveServer."""
    port = free_port()
    env = {**os.environ, "AMPLIFY_API_KEY": API_KEY, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "amplify", "serve", "--model", str(bundle_dir), "--host", "127.0.0.1",
           "--port", str(port), "--threads", "1", "--log-format", "text", *extra]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"amplify serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"amplify serve not ready after 180 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield LiveServer(url, API_KEY, REPO)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def server(bundle_dir, tmp_path_factory):
    """``amplify serve`` in a subprocess on a free port, API key required; yields a :class:`LiveServer`."""
    with run_server(bundle_dir, tmp_path_factory.mktemp("server") / "serve.log") as live:
        yield live


@pytest.fixture(scope="session")
def start_server():
    """:func:`run_server` for tests that need a server of their own (other flags)."""
    return run_server


@pytest.fixture(scope="session")
def local_policy(bundle_dir):
    """The served bundle, loaded in-process, to compare the server's numbers with."""
    from amplify import AMPLIFY

    return AMPLIFY.load(bundle_dir).eval()
