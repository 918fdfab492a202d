"""Fixtures of the protocol tests: a random small bundle that knows two instructions, a live server on
it (API key on), and the unmodified ``openpi-client`` in a venv of its own (it pins numpy<2)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
import torch

from tests.service.live import LiveServer, live_server

API_KEY = "proto-key"
INSTRUCTIONS = ["put the bowl on the plate", "open the top drawer"]
OPENPI_CLIENT = "openpi-client==0.1.2"


@pytest.fixture(scope="session")
def proto_bundle_dir(tmp_path_factory) -> Path:
    from amplify import AMPLIFY
    from amplify.presets import small

    torch.manual_seed(3)
    model = AMPLIFY(small()).eval()
    model.set_instructions(INSTRUCTIONS, torch.randn(len(INSTRUCTIONS), 512, generator=torch.Generator().manual_seed(4)))
    return model.save(tmp_path_factory.mktemp("proto") / "bundle", {"name": "proto-small", "version": "p1"})


@pytest.fixture(scope="session")
def proto_server(proto_bundle_dir) -> Iterator[LiveServer]:
    """The torch back end with an API key, batching up to 16 samples for 20 ms."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with live_server(model=str(proto_bundle_dir), api_key=API_KEY, max_batch_size=16, max_wait_ms=20,
                     threads=1) as server:
        yield server
    torch.set_num_threads(before)


def openpi_venv() -> Path:
    """``$AMPLIFY_HOME/venv-openpi-client`` (``AMPLIFY_HOME`` defaults to ``~/.cache/amplify-serve``)."""
    home = Path(os.environ.get("AMPLIFY_HOME", Path.home() / ".cache" / "amplify-serve"))
    return home / "venv-openpi-client"


@pytest.fixture(scope="session")
def openpi_python() -> Path:
    """The python of a venv holding the unmodified openpi-client 0.1.2 (made once, reused across runs).
    It imports typing_extensions without declaring it, so that is installed beside it."""
    venv = openpi_venv()
    py = venv / "bin" / "python"
    probe = [str(py), "-c", "import openpi_client.websocket_client_policy, openpi_client.msgpack_numpy"]
    if py.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return py
    try:
        if not py.exists():
            venv.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True,
                           timeout=300)
        subprocess.run([str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q", OPENPI_CLIENT,
                        "typing_extensions"], check=True, capture_output=True, text=True, timeout=600)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        out = getattr(e, "stderr", "") or ""
        pytest.skip(f"could not install {OPENPI_CLIENT} into {venv} (is the package registry reachable?): "
                    f"{str(out)[-500:]}")
    if subprocess.run(probe, capture_output=True).returncode != 0:
        pytest.skip(f"{OPENPI_CLIENT} installed into {venv} but does not import")
    return py
