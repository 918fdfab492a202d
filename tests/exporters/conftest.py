"""Models to export and their exports, made once per test session.

Named models: ``fixture_small`` (the reference fixture's amplify.pt; skips without ../shared),
``fixture_perview_mt`` (the per-view tokenizer fixture), ``random_small`` (a random bundle of the
``small`` preset with an instruction table), ``random_keypoints`` (the same at 64 px with keypoint
tokens), ``random_mt`` (a random small tokenizer); any other
name is a checkpoint path.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

INSTRUCTIONS = ["pick up the red block", "open the drawer", "put the bowl on the plate"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread while these tests run: exports and runs of small models are far faster
    single-threaded on a shared, busy CPU (measured: act 0.25 s with 1 thread vs 4-5 s with 2)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def export_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("exports")


@pytest.fixture(scope="session")
def random_small_dir(export_root) -> Path:
    """A random 'small' bundle in the project's format, with a three-instruction table."""
    from amplify import AMPLIFY
    from amplify.presets import small

    torch.manual_seed(0)
    model = AMPLIFY(small()).eval()
    emb = np.random.default_rng(0).standard_normal((len(INSTRUCTIONS), 512)).astype(np.float32)
    model.set_instructions(INSTRUCTIONS, emb)
    return model.save(export_root / "random_small_bundle", {"name": "random-small", "trained": False})


@pytest.fixture(scope="session")
def random_keypoints_dir(export_root) -> Path:
    """The random 'small' bundle at 64 px with keypoint tokens (2 per residual stage 1 and 2)."""
    from amplify import AMPLIFY
    from tests.test_model_math import keypoint_bundle_config

    torch.manual_seed(0)
    model = AMPLIFY(keypoint_bundle_config()).eval()
    with torch.no_grad():  # sharper maps than at initialization, so the keypoints move with the images
        model.img_encoder.keypoint_log_temperature.fill_(-2.0)
    emb = np.random.default_rng(0).standard_normal((len(INSTRUCTIONS), 512)).astype(np.float32)
    model.set_instructions(INSTRUCTIONS, emb)
    return model.save(export_root / "random_keypoints_bundle", {"name": "random-keypoints", "trained": False})


@pytest.fixture(scope="session")
def random_mt_dir(export_root) -> Path:
    """A random motion tokenizer of the 'small' preset in the project's format (no ../shared needed)."""
    from amplify import MotionTokenizer, save_model
    from amplify.presets import small

    torch.manual_seed(0)
    return save_model(MotionTokenizer(small().motion_tokenizer).eval(), export_root / "random_mt", {"name": "random-mt"})


@pytest.fixture(scope="session")
def bundle_path(request, random_small_dir, random_mt_dir):
    """Test bundle name -> checkpoint path (the fixture bundle skips without ../shared)."""

    def get(name: str) -> Path:
        if name == "fixture_small":
            return request.getfixturevalue("small_fixture")[0] / "amplify.pt"
        if name == "fixture_perview_mt":
            return request.getfixturevalue("perview_fixture")[0] / "mt.pt"
        if name == "random_small":
            return random_small_dir
        if name == "random_mt":
            return random_mt_dir
        if name == "random_keypoints":
            return request.getfixturevalue("random_keypoints_dir")
        return Path(name)

    return get


# Triton exports in these tests also carry the int8 and top-k graphs (timed with few runs), so one
# export covers the Triton layout, int8 and top-k sampling.
TRITON_TEST_SETTINGS = {"int8": True, "topk": True, "timing_runs": 1}


class ExportCache:
    """Export each (model, format) once per session; later requests reuse the directory.
    Triton exports default to ``TRITON_TEST_SETTINGS``."""

    def __init__(self, root: Path, bundle_path):
        self.root, self.bundle_path, self.done = root, bundle_path, {}

    def get(self, bundle: str, fmt: str, **settings) -> tuple[Path, dict]:
        from exporters.export import ExportSettings, export_model
        from exporters.source import load_source

        if fmt == "triton" and not settings:
            settings = TRITON_TEST_SETTINGS
        key = (bundle, fmt, tuple(sorted(settings.items())))
        if key not in self.done:
            out = self.root / f"{Path(bundle).name}-{fmt}-{len(self.done)}"
            source = load_source(self.bundle_path(bundle))
            manifest = export_model(source, out, ExportSettings(format=fmt, **settings))
            self.done[key] = (out, manifest)
        return self.done[key]


@pytest.fixture(scope="session")
def exports(export_root, bundle_path) -> ExportCache:
    return ExportCache(export_root, bundle_path)


@pytest.fixture(scope="session")
def policies(bundle_path):
    """PyTorch bundles by test name, loaded once."""
    from amplify import AMPLIFY

    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = AMPLIFY.load(bundle_path(name)).eval()
        return cache[name]

    return get
