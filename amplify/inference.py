"""Preparing a loaded model for inference: linear layers with their weights kept transposed, and
convolution weights in channels-last layout.

``nn.Linear`` computes ``x @ W.T`` with W stored (out, in). On CPU, MKL's kernel for that layout is
slow for the short inputs the serving path runs (15 to 100 tokens): a (15, 768) x (768, 2304)
product took 1.3 ms on one core against 0.49 ms with W stored (in, out) contiguous (2-core Xeon,
torch 2.13; see ``docs/performance.md``). :func:`prepare_for_inference` swaps every ``nn.Linear`` for
an :class:`InferenceLinear` holding W transposed: the same float32 numbers up to rounding. It also
stores ``nn.Conv2d`` weights channels-last, which oneDNN runs faster (the ResNet-18 image encoder on
two 224 px views: 46 -> 30 ms, identical outputs).

(bfloat16 weights were tried too and left out: torch's CPU bfloat16 kernels read a batch-1 weight at
13 GB/s against float32's 29 GB/s here, so the autoregressive steps got slower, not faster.)

The swap is in place and for inference only: a prepared model has no ``nn.Linear`` parameters to
train and cannot be saved (save before preparing, or load again).
"""
from __future__ import annotations

import torch
from torch import nn


class InferenceLinear(nn.Module):
    """``y = x W^T + b`` with W stored transposed, (in, out) contiguous, float32.

    ``weight`` and ``bias`` read like ``nn.Linear``'s ((out, in) and (out,)).
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight_t", linear.weight.detach().t().contiguous())  # (in, out)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())  # (out,)

    @property
    def weight(self) -> torch.Tensor:  # (out, in), a view
        return self.weight_t.t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        x2 = x.reshape(-1, self.in_features)  # (N, in)
        y = torch.mm(x2, self.weight_t) if self.bias is None else torch.addmm(self.bias, x2, self.weight_t)
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def prepare_for_inference(model: nn.Module) -> nn.Module:
    """Swap every ``nn.Linear`` in ``model`` for an :class:`InferenceLinear` and make every ``nn.Conv2d``
    weight channels-last (in place; returns ``model`` in eval mode)."""
    targets = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
               if type(child) is nn.Linear]
    for parent, name, child in targets:
        setattr(parent, name, InferenceLinear(child))
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.to(memory_format=torch.channels_last)
    return model.eval()


def is_prepared(model: nn.Module) -> bool:
    """Whether :func:`prepare_for_inference` was applied (the model then cannot be saved or trained)."""
    return any(isinstance(m, InferenceLinear) for m in model.modules())
