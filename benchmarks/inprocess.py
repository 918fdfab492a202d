"""Section 1: in-process speed of ``act`` and of each stage, on the paper's configuration.

Compares, side by side in one run: the reference computation (FD recomputing the whole sequence
every step, as the original does) vs the cached PyTorch path (and the exported back ends, when an
export directory is given), plus each stage alone, the FLOPs of one ``act`` and this machine's
sustained matmul rate (the floating-point lower bound).
"""
from __future__ import annotations

import numpy as np
import torch
from einops import rearrange
from torch.utils.flop_counter import FlopCounterMode

from amplify import AMPLIFY, points_to_velocities
from benchmarks.common import time_call


def make_inputs(model: AMPLIFY, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random images (b, v, 128, 128, 3) float32, proprio (b, 9), text_emb (b, E), tracks (b, v, H, n, 2)."""
    rng = np.random.default_rng(seed)
    mt = model.cfg.motion_tokenizer
    h, w = mt.img_shape
    return {
        "images": rng.random((batch, mt.num_views, h, w, 3), dtype=np.float32),
        "proprio": rng.normal(0, 0.25, (batch, model.cfg.inverse_dynamics.proprio_dim)).astype(np.float32),
        "text_emb": rng.normal(0, 1, (batch, model.cfg.forward_dynamics.text_embed_dim)).astype(np.float32),
        "tracks": np.cumsum(rng.normal(0, 0.01, (batch, mt.num_views, mt.track_pred_horizon, mt.num_tracks, 2)), axis=2
                            ).astype(np.float32).clip(-1, 1),
    }


def matmul_rate(n: int = 2048, repeats: int = 10) -> float:
    """Sustained float32 matmul rate (FLOP/s) of this machine with torch's current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    r = time_call(lambda: a @ b, repeats=repeats, warmup=2)
    return 2 * n**3 / r["median_s"]


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def run(model: AMPLIFY, batches=(1, 4, 16), repeats: int = 5, reference_max_batch: int = 4) -> dict:
    """All section-1 measurements for ``model`` (a bundle in eval mode)."""
    model = model.eval().requires_grad_(False)
    out: dict = {"act": {}, "stages": {}, "flops": {}}
    x1 = make_inputs(model, 1)
    act = lambda x, cached: model.act(x["images"], x["proprio"], text_emb=x["text_emb"], cached=cached)  # noqa: E731

    # FLOPs of one act (batch 1) and the machine's matmul rate -> lower bound
    out["flops"]["act_cached"] = count_flops(lambda: act(x1, True))
    out["flops"]["act_reference"] = count_flops(lambda: act(x1, False))
    rate = matmul_rate()
    out["flops"]["matmul_flops_per_s"] = rate
    out["flops"]["act_lower_bound_s"] = out["flops"]["act_cached"] / rate

    # identical indices, cached vs reference
    i_cached, _ = model.predict_codes(x1["images"], text_emb=x1["text_emb"], cached=True)
    i_ref, _ = model.predict_codes(x1["images"], text_emb=x1["text_emb"], cached=False)
    out["indices_identical"] = bool(torch.equal(i_cached, i_ref))

    for b in batches:
        x = make_inputs(model, b)
        row = {"cached_torch": time_call(lambda: act(x, True), repeats=repeats)}
        if b <= reference_max_batch:
            row["reference_torch"] = time_call(lambda: act(x, False), repeats=max(2, repeats // 2))
        out["act"][b] = row

    # stages at batch 1 (and a larger batch for the tokenizer)
    with torch.no_grad():
        tokens = model.image_tokens(x1["images"])
        cond = model.forward_dynamics.get_cond_tokens(rearrange(tokens, "b v p d -> b (v p) d"),
                                                      torch.from_numpy(x1["text_emb"]))
        idx = model.forward_dynamics.predict(cond)
        codes = model.motion_tokenizer.indices_to_codes(idx)
        st = out["stages"]
        st["vision_encoder_2views"] = time_call(lambda: model.image_tokens(x1["images"]), repeats=repeats)
        st["fd_predict_cached"] = time_call(lambda: model.forward_dynamics.predict(cond), repeats=repeats)
        st["fd_predict_reference"] = time_call(lambda: model.forward_dynamics.predict_uncached(cond), repeats=2)
        img_id = rearrange(tokens, "b v p d -> b p (v d)")
        prop = torch.from_numpy(x1["proprio"])
        txt = torch.from_numpy(x1["text_emb"])
        st["inverse_dynamics"] = time_call(lambda: model.inverse_dynamics(img_id, txt, prop, codes), repeats=repeats)
        mt = model.motion_tokenizer
        for b in (1, 32):
            vel = points_to_velocities(torch.from_numpy(make_inputs(model, b)["tracks"]))
            st[f"mt_encode_b{b}"] = time_call(lambda: mt.tokenize(vel), repeats=repeats)
        for b in (1, 8):
            c = codes.expand(b, -1, -1).contiguous()
            st[f"mt_decode_fast_b{b}"] = time_call(lambda: mt.decode(c, fast=True), repeats=repeats)
            st[f"mt_decode_reference_b{b}"] = time_call(lambda: mt.decode(c, fast=False), repeats=2)
            v_fast, _ = mt.decode(c, fast=True)
            v_ref, _ = mt.decode(c, fast=False)
            st[f"mt_decode_identical_b{b}"] = bool(torch.equal(v_fast, v_ref))
    return out
