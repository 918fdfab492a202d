"""Shared test helpers: where the reference fixtures are, and small models built on the fly."""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures" / "original"

torch.set_num_threads(2)


@contextlib.contextmanager
def pack_every_linear():
    """Within this block, ``InferenceLinear(..., onednn=True)`` packs every float32 CPU layer for oneDNN
    and runs every product there, whatever its size (the small test models' layers are below the size
    where the served path packs them)."""
    import amplify.inference as inf

    saved = inf._PACK_MIN, inf._PACKED_ALWAYS, inf._PACKED_MACS
    inf._PACK_MIN, inf._PACKED_ALWAYS, inf._PACKED_MACS = 1, 1, 1
    try:
        yield
    finally:
        inf._PACK_MIN, inf._PACKED_ALWAYS, inf._PACKED_MACS = saved


def fixture_dir(name: str) -> Path:
    """A reference-fixture directory, or skip: ../shared exists beside development checkouts and CI
    only, never in a user's clone."""
    d = FIXTURES / name
    if not d.is_dir():
        pytest.skip(f"reference fixtures not found at {d} (../shared is only beside development checkouts and CI)")
    return d


@pytest.fixture(scope="session")
def small_fixture():
    d = fixture_dir("small")
    return d, dict(np.load(d / "inputs.npz")), dict(np.load(d / "expected.npz"))


@pytest.fixture(scope="session")
def perview_fixture():
    d = fixture_dir("alt_perview")
    return d, dict(np.load(d / "inputs.npz")), dict(np.load(d / "expected.npz"))


@pytest.fixture(scope="session")
def small_bundle():
    """A randomly initialized bundle of the 'small' preset (fast to build, real architecture)."""
    from amplify import AMPLIFY
    from amplify.presets import small

    torch.manual_seed(0)
    return AMPLIFY(small()).eval()
