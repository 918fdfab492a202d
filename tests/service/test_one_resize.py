"""Images of any size are resized once, straight to the vision encoder's size, on every back end: the
ONNX and TorchScript back ends give the PyTorch back end's indices and actions for images of three
sizes, on a bundle whose own image size (64 px) is none of the vision encoder's (224 px)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from service.backends import load_backend
from service.backends.exported import REQUIRED_GRAPHS


@pytest.fixture(scope="module")
def backends(tmp_path_factory):
    """The three back ends on one random small bundle with 64 px images (the defect's case)."""
    from amplify import AMPLIFY
    from amplify.config import apply_overrides
    from amplify.presets import small
    from exporters.export import ExportSettings, export_model
    from exporters.source import load_source

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("one_resize")
    torch.manual_seed(3)
    cfg = apply_overrides(small(), ["motion_tokenizer.img_shape=[64,64]", "motion_tokenizer.cls_img_size=[64,64]"])
    bundle = AMPLIFY(cfg).eval().save(root / "bundle", {"name": "img64"})
    out = {"torch": load_backend("torch", str(bundle))}
    for fmt in ("onnx", "torchscript"):
        export_model(load_source(bundle), root / fmt, ExportSettings(format=fmt, graphs=list(REQUIRED_GRAPHS),
                                                                      batch_sizes=[2]))
        out[fmt] = load_backend(fmt, str(root / fmt))
    yield out
    torch.set_num_threads(before)


@pytest.mark.parametrize("size", [64, 128, 200])
def test_every_backend_matches_pytorch_at_any_image_size(backends, size):
    rng = np.random.default_rng(size)
    ref = backends["torch"]
    assert ref.info.image_size == [64, 64]
    images = rng.uniform(0, 1, (2, ref.info.num_views, size, size, 3)).astype(np.float32)
    text = rng.standard_normal((2, ref.info.text_embedding_dim)).astype(np.float32)
    proprio = (rng.standard_normal((2, ref.info.proprio_dim)) * 0.5).astype(np.float32)
    want_indices = ref.predict_codes(images, text)["indices"]
    want_actions = ref.act(images, proprio, text)["actions"]
    for name in ("onnx", "torchscript"):
        got = backends[name]
        np.testing.assert_array_equal(got.predict_codes(images, text)["indices"], want_indices, err_msg=name)
        np.testing.assert_allclose(got.act(images, proprio, text)["actions"], want_actions, atol=2e-5, rtol=0,
                                   err_msg=name)
