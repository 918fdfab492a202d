"""Parity of the speed paths the benchmarks measure: the chunked velocity-only MT decoder."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from amplify import load_motion_tokenizer
from amplify.models.motion_tokenizer import MotionTokenizer
from amplify.presets import paper


@pytest.mark.parametrize("name", ["small", "alt_perview"])
@pytest.mark.parametrize("chunk_points", [1, 7, 2048])
def test_decode_velocities_matches_the_fixtures(name, chunk_points, request):
    d, _, exp = request.getfixturevalue("small_fixture" if name == "small" else "perview_fixture")
    mt, _ = load_motion_tokenizer(d / "mt.pt")
    codes = torch.from_numpy(exp["mt_codes"])
    with torch.no_grad():
        classes = mt.decoder.forward_classes(codes, chunk_points=chunk_points)
        velocities = mt.decode_velocities(codes)
    assert classes.dtype == torch.long
    np.testing.assert_array_equal(velocities.numpy(), exp["mt_x_recon"])
    np.testing.assert_array_equal(mt.logits_to_velocities(torch.from_numpy(exp["mt_rel_logits"])).numpy(),
                                  mt.decode_velocities(codes).numpy())


def test_decode_velocities_matches_the_original_form_at_paper_size():
    torch.manual_seed(0)
    mt = MotionTokenizer(paper().motion_tokenizer).eval()
    codes = mt.indices_to_codes(torch.randint(0, mt.cfg.codebook_size, (2, mt.cfg.seq_len)))
    with torch.no_grad():
        reference, _ = mt.decode(codes, fast=False)
        fast = mt.decode_velocities(codes)
    assert fast.shape == (2, mt.cfg.num_views, mt.cfg.num_steps, mt.cfg.num_tracks, 2)
    torch.testing.assert_close(fast, reference, atol=0, rtol=0)
