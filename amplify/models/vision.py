"""ResNet-18 patch encoder: images (b, H, W, 3) in [0, 1] -> patch tokens (b, 49, 512).

Images are resized to 224x224 (bilinear, no antialiasing) and go into the trunk without mean/std
normalization, as in the original. ``model`` is the trunk as an ``nn.Sequential`` of ResNet-18's
children [conv1, bn1, relu, maxpool, layer1..layer4] so that original weights
(``img_encoder.model.<i>...``) load by name. BatchNorm always uses its running statistics.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from amplify.config import VisionEncoderConfig


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions with a residual (projected when the shape changes)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def resnet18_trunk() -> nn.Sequential:
    """ResNet-18 without pooling and fc: (b, 3, 224, 224) -> (b, 512, 7, 7)."""
    def layer(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
        return nn.Sequential(BasicBlock(in_ch, out_ch, stride), BasicBlock(out_ch, out_ch))

    trunk = nn.Sequential(
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
        layer(64, 64, 1),
        layer(64, 128, 2),
        layer(128, 256, 2),
        layer(256, 512, 2),
    )
    for m in trunk.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return trunk


class VisionEncoder(nn.Module):
    """Images (b, H, W, 3) float in [0, 1] -> patch tokens (b, 49, 512), row-major patches."""

    def __init__(self, cfg: VisionEncoderConfig | None = None):
        super().__init__()
        self.cfg = cfg or VisionEncoderConfig()
        self.model = resnet18_trunk()

    def train(self, mode: bool = True) -> "VisionEncoder":
        # The encoder is frozen: BatchNorm keeps using running statistics even in training.
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2)  # (b, 3, H, W)
        size = self.cfg.image_size
        # A traced graph (the exporters) always resizes, so that it takes images of any size; at the
        # encoder's own size the bilinear resize is the identity.
        if x.shape[-2:] != (size, size) or torch.jit.is_tracing():
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        dtype = self.model[0].weight.dtype  # float32 when served; bfloat16 in benchmarks.precision's all-bf16 variant
        x = self.model(x.to(dtype))  # (b, 512, 7, 7)
        return x.flatten(2).transpose(1, 2).float()  # (b, 49, 512)
