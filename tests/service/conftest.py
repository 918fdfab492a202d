"""Service test fixtures: the reference fixture's data, servers on it and on a random bundle."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from tests.conftest import fixture_dir
from tests.service.live import LiveServer, live_server, untrained_backend

INSTRUCTIONS = ["put the bowl on the plate", "open the top drawer"]


@pytest.fixture(scope="session")
def small_data():
    """(amplify.pt path, inputs, expected) of the 'small' reference fixture."""
    d = fixture_dir("small")
    return d / "amplify.pt", dict(np.load(d / "inputs.npz")), dict(np.load(d / "expected.npz"))


@pytest.fixture(scope="session")
def fixture_server(small_data) -> Iterator[LiveServer]:
    """The torch back end on the small fixture bundle, batching up to 16 samples for 20 ms."""
    with live_server(model=str(small_data[0]), max_batch_size=16, max_wait_ms=20) as server:
        yield server


@pytest.fixture(scope="session")
def random_bundle_dir(tmp_path_factory) -> Path:
    """A random small bundle in the project's format with a table of two known instructions."""
    from amplify import AMPLIFY
    from amplify.presets import small

    torch.manual_seed(1)
    model = AMPLIFY(small()).eval()
    model.set_instructions(INSTRUCTIONS, torch.randn(len(INSTRUCTIONS), 512, generator=torch.Generator().manual_seed(2)))
    return model.save(tmp_path_factory.mktemp("bundle") / "random_small", {"name": "random-small", "version": "t1"})


@pytest.fixture(scope="session")
def random_server(random_bundle_dir) -> Iterator[LiveServer]:
    with live_server(model=str(random_bundle_dir), max_wait_ms=1) as server:
        yield server


@pytest.fixture(scope="session")
def untrained_factory():
    """A backend factory for the untrained small bundle (no files needed)."""
    return lambda settings: untrained_backend()



@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The in-process servers run torch with one intra-op thread (restored after each module): on a
    shared, oversubscribed CPU two spinning threads made /act ~8x slower in our runs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
