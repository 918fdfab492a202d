"""A bundle exercising the config paths the graphs branch on: per-view tokens (S = v*t), codebook
2048 with FSQ [8, 8, 6, 5] (1920 codes) and masked unused logits, ID conditioned on text but not
proprioception (so the graphs' inputs change), FD with text-selected condition tokens."""
from __future__ import annotations

import numpy as np
import torch

from exporters.runtime import load_exported

OVERRIDES = ["motion_tokenizer.per_view=true", "forward_dynamics.pred_seq_len=30", "inverse_dynamics.num_code_tokens=30",
             "motion_tokenizer.codebook_size=2048", "forward_dynamics.codebook_size=2048",
             "forward_dynamics.mask_unused_logits=true", "inverse_dynamics.cond_on_text=true",
             "inverse_dynamics.cond_on_proprio=false", "forward_dynamics.text_select=2",
             "forward_dynamics.text_select_last=5"]


def test_variant_bundle(tmp_path, exports):
    from amplify import AMPLIFY
    from amplify.config import apply_overrides
    from amplify.presets import small

    torch.manual_seed(1)
    policy = AMPLIFY(apply_overrides(small(), OVERRIDES)).eval()
    with torch.no_grad():  # a selection that depends on the instruction (zero at init: the plain mean)
        policy.forward_dynamics.select_logits.weight.normal_(0.0, 1.0)
    path = policy.save(tmp_path / "variant")
    out, m = exports.get(str(path), "torchscript")
    inputs = {g: [t["name"] for t in e["inputs"]] for g, e in m["graphs"].items()}
    assert inputs["act"] == ["images", "text_emb"]
    assert inputs["inverse_dynamics"] == ["images", "text_emb", "codes"]
    assert m["metadata"]["code_length"] == 30 and m["metadata"]["num_codes"] == 1920
    assert m["metadata"]["proprio_dim"] is None and m["parity"]["passed"]
    model = load_exported(out, threads=1)
    rng = np.random.default_rng(3)
    images = rng.uniform(0, 1, (2, 2, 128, 128, 3)).astype(np.float32)
    text_emb = rng.standard_normal((2, 512)).astype(np.float32)
    with torch.no_grad():
        ref_idx, _ = policy.predict_codes(images, text_emb=text_emb)
        ref_actions = policy.act(images, text_emb=text_emb)
    idx, _ = model.predict_codes(images, text_emb=text_emb)
    np.testing.assert_array_equal(idx, ref_idx.numpy())
    assert idx.max() < 1920  # masked logits: never an unused index
    np.testing.assert_allclose(model.act(images, text_emb=text_emb), ref_actions.numpy(), rtol=0, atol=1e-4)
    # indices past the code count wrap onto codes, as FSQ does
    np.testing.assert_allclose(model.indices_to_codes(np.full((1, 30), 1920 + 5)),
                               model.indices_to_codes(np.full((1, 30), 5)), rtol=0, atol=1e-6)
