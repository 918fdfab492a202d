"""amplify.inputs: the image convention every back end and the service share."""
from __future__ import annotations

import numpy as np
import torch

from amplify.inputs import unit_images


def test_unit_images_divides_uint8_by_255_exactly_and_leaves_inputs_alone() -> None:
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (2, 2, 16, 16, 3), dtype=np.uint8)
    before = u8.copy()
    out = unit_images(u8)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, u8.astype(np.float32) / np.float32(255.0))  # bit for bit
    np.testing.assert_array_equal(u8, before)

    f = rng.random((1, 2, 8, 8, 3))
    np.testing.assert_array_equal(unit_images(f), f.astype(np.float32))  # floats: as they are

    t = torch.from_numpy(u8)
    assert torch.equal(unit_images(t), t.float() / 255.0)
    assert torch.equal(t, torch.from_numpy(before))
    tf = torch.rand(1, 2, 8, 8, 3)
    copy = tf.clone()
    assert torch.equal(unit_images(tf), copy) and torch.equal(tf, copy)
