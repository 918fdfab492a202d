"""Preparing a loaded model for inference: linear layers with their weights kept transposed,
convolution weights in channels-last layout, an optional bfloat16 precision, and the fused
forward-dynamics decoding step.

``nn.Linear`` computes ``x @ W.T`` with W stored (out, in). On CPU, MKL's kernel for that layout is
slow for the short inputs the serving path runs (15 to 100 tokens): a (15, 768) x (768, 2304)
product took 1.3 ms on one core against 0.49 ms with W stored (in, out) contiguous (2-core Xeon,
torch 2.13; see ``docs/performance.md``). :func:`prepare_for_inference` swaps every ``nn.Linear`` for
an :class:`InferenceLinear` holding W transposed: the same float32 numbers up to rounding. On CPUs
other than Intel's its float32 products run on a copy of W packed for oneDNN where they are large
enough to pay: MKL runs AVX2 code on AMD CPUs, and on a Zen 5 EPYC oneDNN made FD prediction 1.8x and
``act`` 1.7x faster at batch 1, 2.2x and 1.8x at batch 16. On Intel CPUs MKL runs its AVX-512 kernels
and its one-row product (the FD steps at batch 1) beat oneDNN's: on a 2-core Xeon ``act`` took 276 ms
with MKL against 325 ms packed at batch 1, 1.03x slower at batch 16, so float32 stays on MKL there
(:func:`onednn_default`; ``AMPLIFY_ONEDNN_LINEAR=1`` or ``0`` forces either way). It also
stores ``nn.Conv2d`` weights channels-last, which oneDNN runs faster (the ResNet-18 image encoder on
two 224 px views: 46 -> 30 ms, identical outputs), and gives forward dynamics a
:class:`FusedDecoder` (:mod:`amplify.fused_decoder`) for its one-token steps.

Precision (``precision="bf16"``, opt-in; float32 is the default): the weights of forward dynamics
and inverse dynamics are stored in bfloat16 and their matrix products run in bfloat16 (AMX /
AVX512-BF16 on CPU, tensor cores on CUDA); activations between them (residual stream, LayerNorm,
softmax, the returned tokens and actions) stay float32. The vision encoder and the motion tokenizer
stay float32: on a trained bundle the ~20 bfloat16 convolutions of the ResNet moved its image tokens
enough to change actions by up to 0.52 (0.017 with the vision encoder in float32; see
``docs/performance.md``). With ``onednn`` (the default) the bfloat16 products run on oneDNN's packed
weights as well; torch's bfloat16 ``mm`` reads a one-row product's weight no faster than float32 (13 vs
29 GB/s per byte in torch 2.13); oneDNN's packed product ran the FD weights' one-row products 1.8x
faster than ``mm`` on a Zen 5 EPYC (3.69 vs 6.73 ms, two threads).

``precision="bf16-all"`` (opt-in, for throughput) runs the vision encoder's ResNet trunk in bfloat16 too
(its keypoint maps, where a bundle has them, stay float32). At batch 16 on a 2-core Xeon with AMX the
float32 trunk was 53 % of a bf16 ``act`` on the paper-size model: bf16-all served it at 3.06x float32's
requests/s against bf16's 1.98x. The cost is the image tokens: on the shipped default model FD tokens
were 90.7 % equal to float32's on world observations (bf16: 98.6 %); it solved 387 of 440 held-out
episodes against float32's 390 (bf16: 385) (``docs/performance.md``).

The swap is in place and for inference only: a prepared model has no ``nn.Linear`` parameters to
train and cannot be saved (save before preparing, or load again).
"""
from __future__ import annotations

import functools
import os

import torch
from torch import nn

from amplify.layers import MLP, CrossAttention, SelfAttention

# precision name -> dtype of the weights and products; float32 is the default
PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "bf16-all": torch.bfloat16}
_ALIASES = {"float32": "fp32", "fp32": "fp32", "f32": "fp32", "bfloat16": "bf16", "bf16": "bf16",
            "bf16-all": "bf16-all", "bf16_all": "bf16-all", "bfloat16-all": "bf16-all"}


def precision_name(precision: str | None) -> str:
    """``fp32``, ``bf16`` or ``bf16-all`` from any accepted spelling (None: fp32); ValueError names the choices."""
    if precision is None:
        return "fp32"
    try:
        return _ALIASES[str(precision).strip().lower()]
    except KeyError:
        raise ValueError(f"precision must be one of fp32 (float32), bf16 (bfloat16) or bf16-all (the vision encoder "
                         f"in bfloat16 too), got {precision!r}") from None


def onednn_linear_available() -> bool:
    """Whether this torch has oneDNN's prepacked linear product (CPU builds with MKL-DNN)."""
    return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


# oneDNN's packed product costs ~9 us per call more than MKL's mm (Zen 5, one core), so it pays only on
# large enough products; crossovers measured over 64x64 .. 768x768 weights at 1, 16 and 100 rows:
# weights of >= 2**18 elements win from one row on (256x1024: 1.19x at 1 row, 2.4x at 100; 384x384,
# 2**17.2: 1.05x at 1 row), smaller ones from rows x in x out >= 2**20 on (256x256: 0.67x at 1 row, 1.11x
# at 16, 1.9x at 100; 128x128: 0.65x at 16 rows, 1.16x at 100). Weights under 2**14 elements stay unpacked.
# bfloat16 layers take the same thresholds (measured on float32 only).
_PACK_MIN, _PACKED_ALWAYS, _PACKED_MACS = 2**14, 2**18, 2**20


class InferenceLinear(nn.Module):
    """``y = x W^T + b`` with W stored transposed, (in, out) contiguous, in float32 or bfloat16.

    ``weight`` and ``bias`` read like ``nn.Linear``'s ((out, in) and (out,)). With bfloat16 weights the
    input is cast to bfloat16 for the product; the output is float32 when ``float_out`` (the default),
    else it stays bfloat16 (for a layer whose output only feeds another product, attention, or an
    addition into a float32 residual stream, which promotes it without a separate cast).

    ``onednn`` (CPU, float32 or bfloat16): the products run on a copy of W packed for oneDNN's inner product
    (``torch.ops.mkldnn._linear_pointwise``) instead of MKL's ``mm``. MKL runs AVX2 code on AMD CPUs;
    oneDNN picks its kernels by instruction set (AVX-512 there): on a Zen 5 EPYC, one core, 2.3x the
    100-row prefix products and 1.4x the one-row steps' weight read (``docs/performance.md``). Same
    float32 numbers up to rounding. Tracing and scripting (the exports) and inputs that need gradients
    take the ``mm`` path. In bfloat16 the packed product takes the bfloat16 input and returns bfloat16
    (bit-identical to ``mm`` on the FD weights in torch 2.13); the cast to float32 and the bias follow as
    on the ``mm`` path. A layer whose every CPU product is packed (``packed_min_rows == 1``) keeps no
    unpacked copy (``weight_t`` is None) until one is needed (``weight``, the ``mm`` path): FD's and ID's
    weights take memory once, not twice.
    """

    def __init__(self, linear: nn.Linear, dtype: torch.dtype = torch.float32, float_out: bool = True,
                 onednn: bool = False):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.mixed = dtype != torch.float32
        self.weight_dtype = dtype
        self.float_out = float_out or not self.mixed
        out_dtype = torch.float32 if self.float_out else dtype
        self.register_buffer("weight_t", linear.weight.detach().t().contiguous().to(dtype))  # (in, out)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(out_dtype, copy=True))
        self.packed: torch.Tensor | None = None  # oneDNN's layout of W, an opaque (out, in) tensor
        self.packed_min_rows = 1  # inputs of fewer rows take the mm path
        size = self.in_features * self.out_features
        if (onednn and self.weight_t.device.type == "cpu" and size >= _PACK_MIN
                and onednn_linear_available()):
            self._pack(self.weight_t.t())
            self.packed_min_rows = 1 if size >= _PACKED_ALWAYS else -(-_PACKED_MACS // size)
            if self.packed_min_rows == 1:
                self.weight_t = None  # every CPU product is packed: W once in memory

    def _pack(self, weight: torch.Tensor) -> None:  # weight (out, in)
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), None)

    def _w_t(self) -> torch.Tensor:
        """W (in, out). A layer that kept no unpacked copy unpacks it from oneDNN's (exact) the first time
        it is needed outside the packed product (``weight`` read, tracing, gradients) and keeps it from
        then on, so readers of ``weight`` get one stable tensor (the tokenizer caches on it, by version
        counter: so it is never an inference-mode tensor, whatever mode the first reader runs in). The
        tracer cannot record oneDNN's layout: the unpacking runs outside it."""
        if self.weight_t is None:
            tracing = torch._C._get_tracing_state()
            torch._C._set_tracing_state(None)
            try:
                with torch.inference_mode(False), torch.no_grad():
                    self.weight_t = self.packed.to_dense().t().contiguous()
            finally:
                torch._C._set_tracing_state(tracing)
        return self.weight_t

    # the packed tensor has no storage to copy or pickle: a copy packs its own weight again
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if self.packed is None:
            state["packed"] = None
        elif self.weight_t is not None:
            state["packed"] = "weight_t"  # repack from the kept copy
        else:
            state["packed"] = self.packed.to_dense()  # W (out, in), to repack from
        return state

    def __setstate__(self, state: dict) -> None:
        packed = state.pop("packed", None)
        super().__setstate__(state)
        self.packed = None
        if isinstance(packed, str):
            self._pack(self.weight_t.t())
        elif packed is not None:
            self._pack(packed)

    @property
    def weight(self) -> torch.Tensor:  # (out, in)
        return self._w_t().t()

    def _use_packed(self, x2: torch.Tensor) -> bool:
        return (self.packed is not None and x2.shape[0] >= self.packed_min_rows
                and x2.device.type == "cpu" and x2.dtype in (torch.float32, self.weight_dtype)
                and not (x2.requires_grad and torch.is_grad_enabled())
                and not torch.jit.is_scripting() and not torch.jit.is_tracing())

    def matmul2d(self, x2: torch.Tensor) -> torch.Tensor:
        """(N, in) -> (N, out), bias included (float32, or bfloat16 when not ``float_out``)."""
        if self.mixed:  # the bias is added after the product, in the output dtype, on both paths
            xl = x2.to(self.weight_dtype)
            if self._use_packed(xl):
                y = torch.ops.mkldnn._linear_pointwise(xl, self.packed, None, "none", [], "")
            else:
                y = torch.mm(xl, self._w_t())
            if self.float_out:
                y = y.float()
            return y if self.bias is None else y.add_(self.bias)
        if self._use_packed(x2):
            return torch.ops.mkldnn._linear_pointwise(x2, self.packed, self.bias, "none", [], "")
        w_t = self._w_t()
        return torch.mm(x2, w_t) if self.bias is None else torch.addmm(self.bias, x2, w_t)

    def add_to(self, residual: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """``residual + self(x2)`` for 2-D (N, in) inputs: one fused product when float32 without bias
        (``mm`` path; the packed product adds after, measured no slower than oneDNN's fused sum)."""
        if not self.mixed and self.bias is None and not self._use_packed(x2):
            return torch.addmm(residual, x2, self._w_t())
        return residual + self.matmul2d(x2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        y = self.matmul2d(x.reshape(-1, self.in_features))
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"dtype={self.weight_dtype}, float_out={self.float_out}")


# Inside attention and MLP blocks these layers' outputs feed attention, another product or a residual
# addition: in bfloat16 they stay bfloat16 (no cast back and forth).
_LOW_OUT = {(SelfAttention, "c_attn"), (SelfAttention, "c_proj"), (CrossAttention, "q_proj"),
            (CrossAttention, "kv_proj"), (CrossAttention, "c_proj"), (MLP, "c_fc"), (MLP, "c_proj")}


def _swap_linears(model: nn.Module, dtype: torch.dtype, keep: nn.Module | None = None, onednn: bool = False) -> None:
    """Swap the ``nn.Linear`` layers of ``model`` (those inside ``keep`` excepted) for :class:`InferenceLinear`."""
    kept = {id(m) for m in keep.modules()} if keep is not None else set()
    targets = [(parent, name, child) for parent in model.modules() if id(parent) not in kept
               for name, child in parent.named_children() if type(child) is nn.Linear]
    for parent, name, child in targets:
        setattr(parent, name, InferenceLinear(child, dtype, float_out=(type(parent), name) not in _LOW_OUT,
                                              onednn=onednn))


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A convolution computing ``bn(conv(x))`` with BatchNorm's running statistics folded into its weights
    (eval mode only; the same function up to float32 rounding)."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)  # (out,)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode).to(conv.weight.device)
    with torch.no_grad():
        fused.weight.copy_(conv.weight.detach() * scale[:, None, None, None])
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias.detach())
    return fused.requires_grad_(False)


def _fold_vision_batchnorms(trunk: nn.Sequential) -> None:
    """Fold every BatchNorm of the ResNet-18 trunk (:mod:`amplify.models.vision`) into its convolution."""
    from amplify.models.vision import BasicBlock

    trunk[0], trunk[1] = fold_batchnorm(trunk[0], trunk[1]), nn.Identity()
    for block in trunk.modules():
        if isinstance(block, BasicBlock):
            block.conv1, block.bn1 = fold_batchnorm(block.conv1, block.bn1), nn.Identity()
            block.conv2, block.bn2 = fold_batchnorm(block.conv2, block.bn2), nn.Identity()
            if block.downsample is not None:
                block.downsample = nn.Sequential(fold_batchnorm(block.downsample[0], block.downsample[1]))


@functools.lru_cache(maxsize=1)
def cpu_vendor() -> str:
    """The CPU's vendor id (``GenuineIntel``, ``AuthenticAMD``, ...) from ``/proc/cpuinfo``; ``""`` where
    it cannot be read (not Linux, or not x86)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "vendor_id":
                    return value.strip()
    except OSError:
        pass
    return ""


def onednn_default(dtype: torch.dtype = torch.float32) -> bool:
    """Whether CPU linear products in ``dtype`` run on oneDNN's packed weights when the caller does not say.

    ``AMPLIFY_ONEDNN_LINEAR=1`` / ``0``: always / never. Unset (or ``auto``): bfloat16 always (oneDNN's packed
    bfloat16 product ran the FD weights' one-row products 1.8-1.9x faster than torch's bfloat16 ``mm`` on
    both CPUs measured); float32 everywhere but on Intel CPUs, where MKL's own AVX-512 products are as
    fast or faster (2-core Xeon, paper bundle, 2026-12-05: FD weights' one-row products 8.9 ms with MKL,
    12.3 ms packed; ``act`` 1.18x faster at batch 1, 0.97x at batch 16; ``docs/performance.md``)."""
    setting = os.environ.get("AMPLIFY_ONEDNN_LINEAR", "auto").strip().lower()
    if setting in ("0", "1"):
        return setting == "1"
    if setting not in ("", "auto"):
        raise ValueError(f"AMPLIFY_ONEDNN_LINEAR must be 1, 0 or auto, got {setting!r}")
    return dtype != torch.float32 or cpu_vendor() != "GenuineIntel"


def prepare_for_inference(model: nn.Module, precision: str = "fp32", onednn: bool | None = None) -> nn.Module:
    """Swap every ``nn.Linear`` in ``model`` for an :class:`InferenceLinear`, fold the vision encoder's
    BatchNorms into its convolutions, make every ``nn.Conv2d`` weight channels-last and give forward
    dynamics its fused decoding step (in place; returns ``model`` in eval mode).

    ``precision="bf16"`` stores forward dynamics' and inverse dynamics' weights in bfloat16 (see the
    module docstring); the vision encoder, the motion tokenizer, and any model that is none of those,
    stay float32. ``"bf16-all"`` also stores the vision encoder's ResNet trunk in bfloat16 (its input is cast
    to bfloat16, its tokens back to float32). Preparing again in the same precision does nothing.

    ``onednn`` (None: :func:`onednn_default`, per dtype): linear layers on CPU (float32 and bfloat16) also keep
    their weight packed for oneDNN and run their products there (:class:`InferenceLinear`)."""
    from amplify.fused_decoder import attach_fused_decoder
    from amplify.models.vision import VisionEncoder

    name = precision_name(precision)
    if is_prepared(model):
        if model_precision(model) == name:
            return model.eval()
        raise RuntimeError(f"this model is already prepared for inference in {model_precision(model)}; load it again "
                           f"to prepare it in {name}")
    model.eval()
    low = PRECISIONS[name]
    onednn_fp32 = onednn_default(torch.float32) if onednn is None else bool(onednn)
    onednn_low = onednn_default(low) if onednn is None else bool(onednn)
    for module in list(model.modules()):
        if isinstance(module, VisionEncoder):
            _fold_vision_batchnorms(module.model)  # float32 in every precision (see the module docstring)
    if name != "fp32":
        for part in ("forward_dynamics", "inverse_dynamics"):
            sub = getattr(model, part, None)
            if sub is not None:  # FD's quantizer is the tokenizer's (shared): it stays float32
                _swap_linears(sub, low, keep=getattr(sub, "quantize", None), onednn=onednn_low)
    _swap_linears(model, torch.float32, onednn=onednn_fp32)  # everything not yet swapped
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.to(memory_format=torch.channels_last)
        if name == "bf16-all" and isinstance(module, VisionEncoder):
            module.model.to(low)  # the trunk; VisionEncoder.forward casts to its dtype and back
    attach_fused_decoder(model)
    model.inference_precision = name
    return model.eval()


def is_prepared(model: nn.Module) -> bool:
    """Whether :func:`prepare_for_inference` was applied (the model then cannot be saved or trained)."""
    return any(isinstance(m, InferenceLinear) for m in model.modules())


def model_precision(model: nn.Module) -> str:
    """The precision a model was prepared with (``fp32`` when not prepared)."""
    return getattr(model, "inference_precision", "fp32")
