"""Section 1: in-process speed of ``act`` and of each stage, on the paper's configuration.

Compares, side by side in one run: the reference computation (FD recomputing the whole sequence
every step, as the original does) vs the cached PyTorch path, the same with the linear layers
prepared for inference (``prepare_for_inference``: what the torch back end serves), and the exported
back ends when an export directory is given; plus each stage alone, the FLOPs of one ``act`` and this
machine's sustained matmul rate (the floating-point lower bound).
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from einops import rearrange
from torch.utils.flop_counter import FlopCounterMode

from amplify import AMPLIFY, points_to_velocities
from benchmarks.common import time_call, time_interleaved

# the opt-in precisions section 1 times beside float32: precision -> its row in ``act``
LOW_PRECISION_ROWS = (("bf16", "cached_torch_prepared_bf16"), ("bf16-all", "cached_torch_prepared_bf16_all"))


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


def memory_bandwidth(mbytes: int = 256, repeats: int = 10) -> float:
    """Sustained copy bandwidth (bytes read + written per second) of a ``mbytes`` MB float32 tensor."""
    src = torch.randn(mbytes * (1 << 20) // 4)
    dst = torch.empty_like(src)
    r = time_call(lambda: dst.copy_(src), repeats=repeats, warmup=2)
    return 2 * src.numel() * 4 / r["median_s"]


def unfused_predict(prepared: AMPLIFY, cond: torch.Tensor) -> torch.Tensor:
    """FD prediction of a prepared bundle through the trunk's modules (its fused decoding step set aside)."""
    fd = prepared.forward_dynamics
    fused, fd.fused_decoder = fd.fused_decoder, None
    try:
        return fd.predict(cond)
    finally:
        fd.fused_decoder = fused


def bf16_cost(fp32: AMPLIFY, bf16: AMPLIFY, x: dict) -> dict:
    """What bfloat16 changes on inputs ``x``: FD token agreement with float32 and the largest action difference."""
    i32, _ = fp32.predict_codes(x["images"], text_emb=x["text_emb"])
    i16, _ = bf16.predict_codes(x["images"], text_emb=x["text_emb"])
    a32 = fp32.act(x["images"], x["proprio"], text_emb=x["text_emb"])
    a16 = bf16.act(x["images"], x["proprio"], text_emb=x["text_emb"])
    return {"token_agreement_vs_fp32": float((i32 == i16).float().mean()),
            "max_abs_diff_vs_fp32": float((a32 - a16).abs().max())}


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def floors(model: AMPLIFY, x1: dict, rate: float, bw: float) -> dict:
    """Lower bounds of one batch-1 ``act`` from this run's matmul rate and copy bandwidth.

    ``bandwidth_floor_s`` (issue 17's "floor"): FD weights read once per generated token at copy bandwidth,
    plus the vision encoder's and ID's FLOPs at the matmul rate. ``roofline_floor_s``: each part at the
    larger of its FLOP time and its weight-reading time: the FD prefix (100 tokens) is FLOP-bound, each
    later step bandwidth-bound; vision and ID as above."""
    fd = model.forward_dynamics
    with torch.no_grad():
        tokens = model.image_tokens(x1["images"])
        cond = fd.get_cond_tokens(rearrange(tokens, "b v p d -> b (v p) d"), torch.from_numpy(x1["text_emb"]))
        codes = model.motion_tokenizer.indices_to_codes(fd.predict(cond))
        prefix_x = torch.cat([cond, fd.sos_token.expand(1, -1, -1)], dim=1)
        fd_flops = count_flops(lambda: fd.predict(cond))
        prefix_flops = count_flops(lambda: fd.trunk.forward_cached(prefix_x, None))
        vision_flops = count_flops(lambda: model.image_tokens(x1["images"]))
        id_flops = count_flops(lambda: model.inverse_dynamics(rearrange(tokens, "b v p d -> b p (v d)"),
                                                              torch.from_numpy(x1["text_emb"]),
                                                              torch.from_numpy(x1["proprio"]), codes))
    counts = {"fd_flops": fd_flops, "fd_prefix_flops": prefix_flops, "vision_flops": vision_flops, "id_flops": id_flops,
              "fd_weight_bytes": sum(p.numel() * p.element_size() for p in fd.parameters()),
              "fd_steps": fd.cfg.pred_seq_len}
    return floors_from(counts, rate, bw)


def floors_from(c: dict, rate: float, bw: float) -> dict:
    """:func:`floors` from its counts (FLOPs, FD weight bytes, steps) and a matmul rate and bandwidth."""
    steps = c["fd_steps"]
    step_flops = (c["fd_flops"] - c["fd_prefix_flops"]) / max(steps - 1, 1)
    read_s = c["fd_weight_bytes"] / bw
    other_s = (c["vision_flops"] + c["id_flops"]) / rate
    return {
        **c, "matmul_flops_per_s": rate, "copy_bytes_per_s": bw, "fd_weight_read_s": read_s, "vision_id_flop_s": other_s,
        "bandwidth_floor_s": steps * read_s + other_s,
        "roofline_floor_s": max(c["fd_prefix_flops"] / rate, read_s) + (steps - 1) * max(step_flops / rate, read_s) + other_s,
    }


def run(model: AMPLIFY, batches=(1, 4, 16), repeats: int = 5, reference_max_batch: int = 4,
        backends: dict | None = None, bf16: bool = True) -> dict:
    """All section-1 measurements for ``model`` (a bundle in eval mode); ``backends``: exported runtime
    models (``benchmarks.exports.load_backends``) timed on the same inputs as the PyTorch paths; ``bf16``:
    also the prepared model in bfloat16 (``prepare_for_inference("bf16")``) and in bf16-all (the vision
    encoder in bfloat16 too), each with its token agreement and largest action difference against float32."""
    from benchmarks.exports import act_fn

    backends = backends or {}
    model = model.eval().requires_grad_(False)
    prepared = copy.deepcopy(model).prepare_for_inference()
    low = {row: copy.deepcopy(model).prepare_for_inference(precision)
           for precision, row in LOW_PRECISION_ROWS} if bf16 else {}
    out: dict = {"act": {}, "stages": {}, "flops": {}}
    x1 = make_inputs(model, 1)
    act = lambda x, cached: model.act(x["images"], x["proprio"], text_emb=x["text_emb"], cached=cached)  # noqa: E731
    act_prepared = lambda x: prepared.act(x["images"], x["proprio"], text_emb=x["text_emb"])  # noqa: E731

    # FLOPs of one act (batch 1) and the machine's matmul rate -> lower bound
    out["flops"]["act_cached"] = count_flops(lambda: act(x1, True))
    out["flops"]["act_reference"] = count_flops(lambda: act(x1, False))
    rate = matmul_rate()
    out["flops"]["matmul_flops_per_s"] = rate
    out["flops"]["act_lower_bound_s"] = out["flops"]["act_cached"] / rate
    # FD's incremental steps read every FD weight once per step: the memory-bandwidth bound
    bw = memory_bandwidth()
    fd_bytes = sum(p.numel() * p.element_size() for p in model.forward_dynamics.parameters())
    steps = model.cfg.forward_dynamics.pred_seq_len  # one prefix pass + S-1 cached steps
    out["flops"]["copy_bytes_per_s"] = bw
    out["flops"]["fd_weight_bytes"] = fd_bytes
    out["flops"]["fd_steps"] = steps
    out["flops"]["fd_bandwidth_bound_s"] = steps * fd_bytes / bw
    out["floor"] = floors(model, x1, rate, bw)

    # identical indices, cached vs reference
    i_cached, _ = model.predict_codes(x1["images"], text_emb=x1["text_emb"], cached=True)
    i_ref, _ = model.predict_codes(x1["images"], text_emb=x1["text_emb"], cached=False)
    i_prep, _ = prepared.predict_codes(x1["images"], text_emb=x1["text_emb"])
    out["indices_identical"] = bool(torch.equal(i_cached, i_ref) and torch.equal(i_prep, i_ref))

    for b in batches:
        x = make_inputs(model, b)
        torch_paths = {"cached_torch": lambda: act(x, True), "cached_torch_prepared": lambda: act_prepared(x)}
        for name, m in low.items():
            torch_paths[name] = lambda m=m: m.act(x["images"], x["proprio"], text_emb=x["text_emb"])
        if b == 1:  # the floor's probes in the same turns: on a shared machine the load moves the floor too
            n_mm = 2048
            ma, mb = torch.randn(n_mm, n_mm), torch.randn(n_mm, n_mm)
            src = torch.randn(256 * (1 << 20) // 4)
            dst = torch.empty_like(src)
            torch_paths["_probe_matmul"] = lambda: ma @ mb
            torch_paths["_probe_copy"] = lambda: dst.copy_(src)
        row = time_interleaved(torch_paths, repeats=repeats)  # in turns: the ratios between them hold under load
        if b == 1:
            mm_t, cp_t = row.pop("_probe_matmul"), row.pop("_probe_copy")
            out["floor_same_turns"] = floors_from(out["floor"], 2 * n_mm**3 / mm_t["median_s"],
                                                  2 * src.numel() * 4 / cp_t["median_s"])
            del ma, mb, src, dst
        if b <= reference_max_batch:
            row["reference_torch"] = time_call(lambda: act(x, False), repeats=max(2, repeats // 2))
        ref_actions = act(x, True).numpy()
        row["cached_torch_prepared"]["max_abs_diff_vs_torch"] = float(np.abs(act_prepared(x).numpy() - ref_actions).max())
        for name, m in low.items():
            row[name].update(bf16_cost(prepared, m, x))
            row[name]["max_abs_diff_vs_torch"] = float(np.abs(torch_paths[name]().numpy() - ref_actions).max())
        for name, m in backends.items():
            if name == "torchscript" and b > reference_max_batch:  # seconds per call on 2 busy cores: keep the run short
                continue
            fn = act_fn(m, x)
            row[name] = time_call(fn, repeats=repeats, warmup=3)  # TorchScript optimizes on its first calls
            row[name]["max_abs_diff_vs_torch"] = float(np.abs(np.asarray(fn()) - ref_actions).max())
        out["act"][b] = row
        print(f"  act batch {b}: " + ", ".join(f"{k} {v['median_s'] * 1e3:.1f} ms" for k, v in row.items()), flush=True)

    # stages at batch 1 (and a larger batch for the tokenizer)
    with torch.no_grad():
        tokens = model.image_tokens(x1["images"])
        cond = model.forward_dynamics.get_cond_tokens(rearrange(tokens, "b v p d -> b (v p) d"),
                                                      torch.from_numpy(x1["text_emb"]))
        idx = model.forward_dynamics.predict(cond)
        codes = model.motion_tokenizer.indices_to_codes(idx)
        st = out["stages"]
        st["vision_encoder_2views"] = time_call(lambda: model.image_tokens(x1["images"]), repeats=repeats)
        st["vision_encoder_2views_prepared"] = time_call(lambda: prepared.image_tokens(x1["images"]), repeats=repeats)
        st.update(time_interleaved({  # in turns: fused vs unfused vs plain under the same load
            "fd_predict_cached": lambda: model.forward_dynamics.predict(cond),
            "fd_predict_cached_prepared": lambda: prepared.forward_dynamics.predict(cond),
            "fd_predict_cached_prepared_unfused": lambda: unfused_predict(prepared, cond)}, repeats=max(repeats, 5)))
        st["fd_predict_reference"] = time_call(lambda: model.forward_dynamics.predict_uncached(cond), repeats=2)
        img_id = rearrange(tokens, "b v p d -> b p (v d)")
        prop = torch.from_numpy(x1["proprio"])
        txt = torch.from_numpy(x1["text_emb"])
        st["inverse_dynamics"] = time_call(lambda: model.inverse_dynamics(img_id, txt, prop, codes), repeats=repeats)
        st["inverse_dynamics_prepared"] = time_call(lambda: prepared.inverse_dynamics(img_id, txt, prop, codes),
                                                    repeats=repeats)
        mt, mt_prep = model.motion_tokenizer, prepared.motion_tokenizer
        for b in (1, 32):
            vel = points_to_velocities(torch.from_numpy(make_inputs(model, b)["tracks"]))
            st[f"mt_encode_b{b}"] = time_call(lambda: mt.tokenize(vel), repeats=repeats)
            st[f"mt_encode_b{b}_prepared"] = time_call(lambda: mt_prep.tokenize(vel), repeats=repeats)
        for b in (1, 8):
            c = codes.expand(b, -1, -1).contiguous()
            st[f"mt_decode_reference_b{b}"] = time_call(lambda: mt.decode(c, fast=False), repeats=2)
            st[f"mt_decode_fast_logits_b{b}"] = time_call(lambda: mt.decode(c, fast=True), repeats=repeats)
            st[f"mt_decode_velocities_b{b}"] = time_call(lambda: mt.decode_velocities(c), repeats=repeats)
            st[f"mt_decode_velocities_b{b}_prepared"] = time_call(lambda: mt_prep.decode_velocities(c), repeats=repeats)
            v_ref, _ = mt.decode(c, fast=False)
            v_fast, _ = mt.decode(c, fast=True)
            st[f"mt_decode_identical_b{b}"] = bool(torch.equal(v_fast, v_ref) and torch.equal(mt.decode_velocities(c), v_ref)
                                                   and torch.equal(mt_prep.decode_velocities(c), v_ref))
    return out
