"""Inference preparation: the fused FD decoding step against the module path, the opt-in bfloat16
precision (what it changes, and what it leaves float32), BatchNorm folding, device checks."""
from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch
from einops import rearrange

from amplify import AMPLIFY
from amplify.devices import check_device, native_bf16, warn_if_emulated
from amplify.inference import InferenceLinear, fold_batchnorm, model_precision, onednn_linear_available, precision_name
from amplify.presets import small
from tests.conftest import pack_every_linear

needs_onednn = pytest.mark.skipif(not onednn_linear_available(), reason="no oneDNN packed linear product in this torch")


@pytest.fixture(scope="module")
def bundle() -> AMPLIFY:
    torch.manual_seed(3)
    return AMPLIFY(small()).eval().requires_grad_(False)


def inputs(model: AMPLIFY, b: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mt = model.cfg.motion_tokenizer
    return {"images": rng.random((b, mt.num_views, *mt.img_shape, 3), dtype=np.float32),
            "proprio": rng.normal(0, 0.3, (b, model.cfg.inverse_dynamics.proprio_dim)).astype(np.float32),
            "text_emb": rng.normal(0, 1, (b, model.cfg.forward_dynamics.text_embed_dim)).astype(np.float32)}


def cond_tokens(model: AMPLIFY, x: dict) -> torch.Tensor:
    with torch.no_grad():
        tokens = model.image_tokens(x["images"])
        return model.forward_dynamics.get_cond_tokens(rearrange(tokens, "b v p d -> b (v p) d"),
                                                      torch.from_numpy(x["text_emb"]))


@pytest.mark.parametrize("batch", [1, 3])
def test_fused_decoder_matches_the_module_path_and_the_reference(bundle, batch):
    prepared = copy.deepcopy(bundle).prepare_for_inference()
    fd = prepared.forward_dynamics
    assert fd.fused_decoder is not None and bundle.forward_dynamics.fused_decoder is None
    cond = cond_tokens(bundle, inputs(bundle, batch))
    fused_idx, fused_logits = fd.predict(cond, return_logits=True)
    fused, fd.fused_decoder = fd.fused_decoder, None
    module_idx, module_logits = fd.predict(cond, return_logits=True)
    fd.fused_decoder = fused
    ref_idx, ref_logits = bundle.forward_dynamics.predict_uncached(cond, return_logits=True)
    assert torch.equal(fused_idx, module_idx) and torch.equal(fused_idx, ref_idx)
    torch.testing.assert_close(fused_logits, module_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(fused_logits, ref_logits, rtol=0, atol=1e-4)


def test_prediction_continues_a_given_prefix(bundle):
    fd = bundle.forward_dynamics
    cond = cond_tokens(bundle, inputs(bundle, 2))
    free = fd.predict_uncached(cond)
    assert torch.equal(fd.predict_uncached(cond, prefix=free), free)  # its own tokens: nothing changes
    prefix = (free[:, :2] + 1) % fd.num_codes  # tokens it would not have chosen
    got, logits = fd.predict_uncached(cond, prefix=prefix, return_logits=True)
    assert torch.equal(got[:, :2], prefix)
    with torch.no_grad():
        forced = fd(cond, got)  # teacher forcing on the result: every later token is the argmax given those before
    torch.testing.assert_close(logits, forced, rtol=0, atol=1e-4)
    assert torch.equal(got[:, 2:], forced[:, 2:].argmax(-1))


@needs_onednn
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(768, 2304), (64, 64), (128, 128)])
def test_onednn_packed_products_match_mm(shape, bias):
    torch.manual_seed(0)
    lin = torch.nn.Linear(*shape, bias=bias)
    mm, packed = InferenceLinear(lin), InferenceLinear(lin, onednn=True)
    size = shape[0] * shape[1]
    assert mm.packed is None and (packed.packed is not None) == (size >= 2**14)
    assert packed.packed is None or packed.packed_min_rows == (1 if size >= 2**18 else -(-2**20 // size))
    # a layer packed for every product keeps no unpacked copy; its weight unpacks exactly
    assert (packed.weight_t is None) == (packed.packed is not None and packed.packed_min_rows == 1)
    copied = copy.deepcopy(packed)  # the opaque tensor has no storage: a copy packs again
    assert (copied.packed is None) == (packed.packed is None) and copied.packed_min_rows == packed.packed_min_rows
    assert (copied.weight_t is None) == (packed.weight_t is None)
    assert torch.equal(copied.weight, lin.weight.detach())  # unpacked once, then kept (a stable tensor)
    assert copied.weight_t is not None and copied.weight.data_ptr() == copied.weight.data_ptr()
    fresh = copy.deepcopy(packed)
    with torch.inference_mode():  # first read in inference mode (the service's): still a normal tensor
        w = fresh.weight
    assert not w.is_inference() and w._version >= 0 and torch.equal(w, lin.weight.detach())
    with torch.no_grad():
        for rows in (1, 3, 100):
            x, res = torch.randn(rows, shape[0]), torch.randn(rows, shape[1])
            for m in (packed, copied):
                torch.testing.assert_close(m.matmul2d(x), mm.matmul2d(x), rtol=0, atol=2e-5)
                torch.testing.assert_close(m.add_to(res, x), mm.add_to(res, x), rtol=0, atol=2e-5)
            torch.testing.assert_close(packed(x[None]), mm(x[None]), rtol=0, atol=2e-5)
    x = torch.randn(4, shape[0])
    traced = torch.jit.trace(packed, x)  # the exports trace the mm path
    assert "mkldnn" not in str(traced.graph)
    torch.testing.assert_close(traced(x), mm(x), rtol=0, atol=1e-6)
    xg = x.clone().requires_grad_(True)  # inputs needing gradients take the mm path too
    packed(xg).sum().backward()
    assert xg.grad is not None


@needs_onednn
def test_onednn_switch_and_every_layer_packed(bundle, monkeypatch):
    def packed(m):
        return [lin.packed is not None for lin in m.modules() if isinstance(lin, InferenceLinear)]

    assert not any(packed(copy.deepcopy(bundle).prepare_for_inference(onednn=False)))
    monkeypatch.setenv("AMPLIFY_ONEDNN_LINEAR", "0")
    assert not any(packed(copy.deepcopy(bundle).prepare_for_inference()))
    monkeypatch.setenv("AMPLIFY_ONEDNN_LINEAR", "1")  # forced on, whatever the CPU
    with pack_every_linear():
        every = copy.deepcopy(bundle).prepare_for_inference()
    monkeypatch.delenv("AMPLIFY_ONEDNN_LINEAR")
    assert all(packed(every))
    cond = cond_tokens(bundle, inputs(bundle, 3))
    idx, logits = every.forward_dynamics.predict(cond, return_logits=True)
    ref_idx, ref_logits = bundle.forward_dynamics.predict_uncached(cond, return_logits=True)
    assert torch.equal(idx, ref_idx)
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-4)
    x = inputs(bundle, 2)
    torch.testing.assert_close(every.act(x["images"], x["proprio"], text_emb=x["text_emb"]),
                               bundle.act(x["images"], x["proprio"], text_emb=x["text_emb"]), rtol=0, atol=1e-4)
    # every layer packed keeps no unpacked copy; the tokenizer's decoder reads its weights (and caches on
    # their version counters) in the service's inference mode, twice
    served = copy.deepcopy(every)
    assert all(lin.weight_t is None for lin in served.modules() if isinstance(lin, InferenceLinear))
    codes = bundle.predict_codes(x["images"], text_emb=x["text_emb"])[1]
    with torch.inference_mode():
        for _ in range(2):
            torch.testing.assert_close(served.motion_tokenizer.decode_velocities(codes),
                                       bundle.motion_tokenizer.decode_velocities(codes), rtol=0, atol=1e-4)


@needs_onednn
@pytest.mark.parametrize("float_out", [True, False])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(768, 2304), (128, 128)])
def test_onednn_packed_bf16_products_match_mm(shape, bias, float_out):
    torch.manual_seed(0)
    lin = torch.nn.Linear(*shape, bias=bias)
    mm = InferenceLinear(lin, torch.bfloat16, float_out=float_out)
    packed = InferenceLinear(lin, torch.bfloat16, float_out=float_out, onednn=True)
    assert mm.packed is None and packed.packed is not None  # both shapes are at least 2**14 elements
    out = torch.float32 if float_out else torch.bfloat16
    copied = copy.deepcopy(packed)
    assert copied.packed is not None
    with torch.no_grad():
        for rows in (1, 3, 100):
            x, res = torch.randn(rows, shape[0]), torch.randn(rows, shape[1])
            for m in (packed, copied):
                for xin in (x, x.bfloat16()):  # float32 inputs are cast to bfloat16 first, as on the mm path
                    y, ref = m.matmul2d(xin), mm.matmul2d(xin)
                    assert y.dtype == ref.dtype == out
                    # same bfloat16 product up to one rounding of the bfloat16 result (bias added after)
                    torch.testing.assert_close(y.float(), ref.float(), rtol=2**-7, atol=1e-5)
                torch.testing.assert_close(m.add_to(res, x), mm.add_to(res, x), rtol=2**-7, atol=1e-5)
    x = torch.randn(4, shape[0])
    traced = torch.jit.trace(packed, x)  # the exports trace the mm path
    assert "mkldnn" not in str(traced.graph)
    torch.testing.assert_close(traced(x), mm(x), rtol=0, atol=0)
    xg = x.clone().requires_grad_(True)
    packed(xg).sum().backward()  # inputs needing gradients take the mm path
    assert xg.grad is not None


@needs_onednn
def test_onednn_switch_in_bf16(bundle, monkeypatch):
    def packed(m, dtype):
        return [lin.packed is not None for lin in m.modules()
                if isinstance(lin, InferenceLinear) and lin.weight_dtype == dtype]

    with pack_every_linear():
        mm = copy.deepcopy(bundle).prepare_for_inference("bf16", onednn=False)
        monkeypatch.setenv("AMPLIFY_ONEDNN_LINEAR", "0")
        env_off = copy.deepcopy(bundle).prepare_for_inference("bf16")
        monkeypatch.setenv("AMPLIFY_ONEDNN_LINEAR", "1")
        every = copy.deepcopy(bundle).prepare_for_inference("bf16")
        monkeypatch.delenv("AMPLIFY_ONEDNN_LINEAR")
    for dtype in (torch.bfloat16, torch.float32):
        assert not any(packed(mm, dtype)) and not any(packed(env_off, dtype))
        assert packed(every, dtype) and all(packed(every, dtype))
    x = inputs(bundle, 3)
    i_mm, c_mm = mm.predict_codes(x["images"], text_emb=x["text_emb"])
    i_pk, c_pk = every.predict_codes(x["images"], text_emb=x["text_emb"])
    assert c_pk.dtype == torch.float32 and float((i_pk == i_mm).float().mean()) > 0.9
    a_mm = mm.act(x["images"], x["proprio"], text_emb=x["text_emb"])
    a_pk = every.act(x["images"], x["proprio"], text_emb=x["text_emb"])
    assert a_pk.dtype == torch.float32 and torch.isfinite(a_pk).all()
    assert float((a_pk - a_mm).abs().max()) < 0.2


@needs_onednn
def test_onednn_default_by_cpu_and_dtype(bundle, monkeypatch):
    """Unset (or auto): bfloat16 always on oneDNN; float32 too, except on Intel CPUs, where MKL's own
    products are as fast (docs/performance.md). 1 / 0 force either way; anything else is refused."""
    import amplify.inference as inf

    def packed(m, dtype):
        return [lin.packed is not None for lin in m.modules()
                if isinstance(lin, InferenceLinear) and lin.weight_dtype == dtype]

    monkeypatch.delenv("AMPLIFY_ONEDNN_LINEAR", raising=False)
    for vendor, fp32 in (("GenuineIntel", False), ("AuthenticAMD", True), ("", True)):
        monkeypatch.setattr(inf, "cpu_vendor", lambda vendor=vendor: vendor)
        assert inf.onednn_default(torch.float32) is fp32 and inf.onednn_default(torch.bfloat16) is True
        monkeypatch.setenv("AMPLIFY_ONEDNN_LINEAR", "auto")
        assert inf.onednn_default(torch.float32) is fp32
        for setting, on in (("1", True), ("0", False)):
            monkeypatch.setenv("AMPLIFY_ONEDNN_LINEAR", setting)
            assert inf.onednn_default(torch.float32) is on and inf.onednn_default(torch.bfloat16) is on
        monkeypatch.delenv("AMPLIFY_ONEDNN_LINEAR")
        with pack_every_linear():
            b16 = copy.deepcopy(bundle).prepare_for_inference("bf16")
        assert packed(b16, torch.bfloat16) and all(packed(b16, torch.bfloat16))
        assert packed(b16, torch.float32) and all(p is fp32 for p in packed(b16, torch.float32))
    monkeypatch.setenv("AMPLIFY_ONEDNN_LINEAR", "yes")
    with pytest.raises(ValueError, match="AMPLIFY_ONEDNN_LINEAR must be 1, 0 or auto"):
        inf.onednn_default()


def test_bf16_all_runs_the_vision_trunk_in_bfloat16_too(bundle):
    """precision bf16-all: as bf16, and the vision encoder's trunk in bfloat16 (tokens float32, near float32's)."""
    b16, b16all = (copy.deepcopy(bundle).prepare_for_inference(p) for p in ("bf16", "bf16_all"))
    assert model_precision(b16all) == "bf16-all" and precision_name("BFloat16-All") == "bf16-all"
    assert all(p.dtype == torch.bfloat16 for p in b16all.img_encoder.model.parameters())
    assert all(p.dtype == torch.float32 for p in b16.img_encoder.model.parameters())
    assert all(p.dtype == torch.float32 for p in b16all.motion_tokenizer.parameters())
    x = inputs(bundle, 2)
    ref, tok = bundle.image_tokens(x["images"]), b16all.image_tokens(x["images"])
    assert tok.dtype == torch.float32 and tok.shape == ref.shape
    err = (tok - ref).abs()  # ~20 bfloat16 convolutions: small on average, a few entries further off
    assert float(err.mean()) < 0.02 * float(ref.abs().mean()) and float(err.max()) < 0.25
    a = b16all.act(x["images"], x["proprio"], text_emb=x["text_emb"])
    assert a.dtype == torch.float32 and torch.isfinite(a).all()
    with pytest.raises(RuntimeError, match="already prepared for inference in bf16-all"):
        b16all.prepare_for_inference("bf16")


def test_bf16_all_keeps_keypoint_maps_float32():
    """A keypoint trunk (amplify/models/vision.py): the float32 keypoint maps take the bfloat16 features."""
    from tests.test_model_math import keypoint_bundle_config

    torch.manual_seed(0)
    model = AMPLIFY(keypoint_bundle_config()).eval().requires_grad_(False)
    b16all = copy.deepcopy(model).prepare_for_inference("bf16-all")
    assert all(p.dtype == torch.float32 for p in b16all.img_encoder.keypoint_maps.parameters())
    images = torch.rand(2, 64, 64, 3)
    with torch.no_grad():
        ref, out = model.img_encoder(images), b16all.img_encoder(images)
    assert out.dtype == torch.float32 and out.shape == ref.shape and torch.isfinite(out).all()
    torch.testing.assert_close(out[:, :4], ref[:, :4], rtol=0.1, atol=0.1)  # the patches, rounded to bfloat16


def test_fused_decoder_samples_topk_like_the_module_path(bundle):
    prepared = copy.deepcopy(bundle).prepare_for_inference()
    fd = prepared.forward_dynamics
    cond = cond_tokens(bundle, inputs(bundle, 2, seed=1))
    fused = fd.predict(cond, "topk", torch.Generator().manual_seed(7))
    plain = bundle.forward_dynamics.predict(cond, "topk", torch.Generator().manual_seed(7))
    assert torch.equal(fused, plain)


def test_bf16_runs_fd_id_in_bfloat16_and_keeps_the_rest_float32(bundle):
    b16 = copy.deepcopy(bundle).prepare_for_inference("bf16")
    assert model_precision(b16) == "bf16"
    shared = {id(m) for m in b16.forward_dynamics.quantize.modules()}  # the tokenizer's quantizer, shared with FD
    for part in (b16.forward_dynamics, b16.inverse_dynamics):
        lins = [m for m in part.modules() if isinstance(m, InferenceLinear) and id(m) not in shared]
        assert lins and all(m.weight_dtype == torch.bfloat16 for m in lins)
    mt_lins = [m for m in b16.motion_tokenizer.modules() if isinstance(m, InferenceLinear)]
    assert mt_lins and all(m.weight_dtype == torch.float32 for m in mt_lins)
    assert all(p.dtype == torch.float32 for p in b16.img_encoder.parameters())  # vision stays float32
    assert b16.forward_dynamics.unembed.float_out and not b16.forward_dynamics.trunk.transformer.h[0].attn.c_attn.float_out
    x = inputs(bundle, 4)
    fp32 = copy.deepcopy(bundle).prepare_for_inference()
    a32 = fp32.act(x["images"], x["proprio"], text_emb=x["text_emb"])
    a16 = b16.act(x["images"], x["proprio"], text_emb=x["text_emb"])
    assert a16.dtype == torch.float32 and a16.shape == a32.shape and torch.isfinite(a16).all()
    assert float((a16 - a32).abs().max()) < 0.2  # bfloat16 keeps ~3 significant digits; actions are in [-1, 1]
    i32, c32 = fp32.predict_codes(x["images"], text_emb=x["text_emb"])
    i16, c16 = b16.predict_codes(x["images"], text_emb=x["text_emb"])
    assert c16.dtype == torch.float32 and i16.dtype == torch.int64
    assert float((i16 == i32).float().mean()) > 0.5
    # the vision encoder is the float32 one: image tokens equal to the float32 prepared model's
    assert torch.equal(b16.image_tokens(x["images"]), fp32.image_tokens(x["images"]))


def test_precision_names_and_preparing_twice(bundle):
    assert precision_name(None) == "fp32" and precision_name("bfloat16") == "bf16" and precision_name("FP32") == "fp32"
    with pytest.raises(ValueError, match="fp32.*bf16"):
        precision_name("int8")
    m = copy.deepcopy(bundle).prepare_for_inference()
    assert m.prepare_for_inference("fp32") is m  # same precision: nothing to do
    with pytest.raises(RuntimeError, match="load it again"):
        m.prepare_for_inference("bf16")


def test_batchnorm_folding_is_the_same_function():
    torch.manual_seed(0)
    conv, bn = torch.nn.Conv2d(3, 8, 3, 2, 1, bias=False), torch.nn.BatchNorm2d(8)
    bn.running_mean.normal_(0, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.normal_(1, 0.2)
    bn.bias.data.normal_(0, 0.2)
    conv.eval(), bn.eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(fold_batchnorm(conv, bn)(x), bn(conv(x)), rtol=0, atol=1e-5)


def test_device_checks():
    assert check_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="not a device name|not supported"):
        check_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device cpu"):
            check_device("cuda")
        with pytest.raises(ValueError, match="CUDA GPU"):
            check_device("cuda:1")
        assert native_bf16("cuda") is False
    assert isinstance(native_bf16("cpu"), bool)


def test_bf16_without_native_support_warns(monkeypatch, caplog):
    monkeypatch.setattr("amplify.devices.native_bf16", lambda device: False)
    with caplog.at_level(logging.WARNING, logger="amplify"):
        warn_if_emulated("bf16", "cpu")
        warn_if_emulated("fp32", "cpu")
    assert len([r for r in caplog.records if "no native bfloat16" in r.message]) == 1
