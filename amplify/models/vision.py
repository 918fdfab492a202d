"""ResNet-18 patch encoder: images (b, H, W, 3) in [0, 1] -> patch tokens (b, 49, 512).

Images are resized to 224x224 (bilinear, no antialiasing) and go into the trunk without mean/std
normalization, as in the original. ``model`` is the trunk as an ``nn.Sequential`` of ResNet-18's
children [conv1, bn1, relu, maxpool, layer1..layer4] so that original weights
(``img_encoder.model.<i>...``) load by name. BatchNorm always uses its running statistics.

Keypoint tokens (opt-in, ``VisionEncoderConfig.keypoints`` = K > 0; not in the original): per residual
stage l in ``keypoint_levels`` (layer1 at stride 4, layer2 at 8, layer3 at 16), K maps from a 1x1
convolution, a softmax over each map's positions at a learned temperature and its expected (x, y) in
[-1, 1] (spatial soft-argmax), embedded as a token (:func:`keypoint_embedding`) after the patches:

    images (b, S, S, 3) -> trunk -> patches (b, (S/32)^2, 512)
                        -> stage l maps (b, C_l, H_l, W_l) -> 1x1 conv (b, K, H_l, W_l) -> (x, y) (b, K, 2)
    tokens = [patches, keypoint_embedding(x, y) of every level]                 (b, (S/32)^2 + K L, 512)

``python -m training.vision_pretrain --pixel-weight`` fits keypoint k to where object slot k is, so FD
and ID get the objects' image positions to the pixel, which the final 2x2 or 4x4 patches do not hold.
"""
from __future__ import annotations

from typing import Sequence

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


STAGE_CHANNELS = {1: 64, 2: 128, 3: 256}  # channels of ResNet-18's residual stages whose maps keypoints read
KEYPOINT_FREQUENCIES = (1, 2, 4, 8, 16, 32)  # keypoint_embedding: periods from 2 down to 1/16 of the image


def trunk_features(trunk: nn.Sequential, x: torch.Tensor, levels: Sequence[int] = ()) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The trunk (:func:`resnet18_trunk`) on ``x`` (n, 3, S, S): its final maps (n, 512, S/32, S/32) and
    the maps after each residual stage in ``levels`` (1: layer1, (n, 64, S/4, S/4); 2: layer2,
    (n, 128, S/8, S/8); 3: layer3, (n, 256, S/16, S/16))."""
    maps = []
    h = trunk[:5](x)  # stem + layer1
    if 1 in levels:
        maps.append(h)
    for level, stage in ((2, trunk[5]), (3, trunk[6])):
        h = stage(h)
        if level in levels:
            maps.append(h)
    return trunk[7](h), maps


def spatial_soft_argmax(logits: torch.Tensor) -> torch.Tensor:
    """(n, K, H, W) -> (n, K, 2): each map's expected (x, y) under a softmax over its positions, in [-1, 1]
    (a cell's centre at ((col + 0.5) / W * 2 - 1, (row + 0.5) / H * 2 - 1), the same at any resolution)."""
    n, k, h, w = logits.shape
    gy = (torch.arange(h, dtype=logits.dtype, device=logits.device) + 0.5) / h * 2 - 1
    gx = (torch.arange(w, dtype=logits.dtype, device=logits.device) + 0.5) / w * 2 - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1).reshape(h * w, 2)  # (HW, [x, y])
    return logits.flatten(2).softmax(-1) @ grid


def keypoint_embedding(xy: torch.Tensor, dim: int) -> torch.Tensor:
    """Keypoints (n, K, 2) in [-1, 1] -> tokens (n, K, dim): [x, y, then sin and cos of pi f x and of
    pi f y for f in KEYPOINT_FREQUENCIES], zeros after. Fixed (no weights): the readers' projections learn
    what to take, the high frequencies keep sub-pixel differences apart."""
    angles = torch.pi * xy[..., None, :] * xy.new_tensor(KEYPOINT_FREQUENCIES)[:, None]  # (n, K, F, 2)
    feats = torch.cat([xy, angles.sin().flatten(-2), angles.cos().flatten(-2)], dim=-1)  # (n, K, 2 + 4F)
    return F.pad(feats, (0, dim - feats.shape[-1]))


class VisionEncoder(nn.Module):
    """Images (b, H, W, 3) float in [0, 1] -> tokens (b, 49, 512): row-major patches, then any keypoint tokens."""

    def __init__(self, cfg: VisionEncoderConfig | None = None):
        super().__init__()
        self.cfg = cfg or VisionEncoderConfig()
        self.model = resnet18_trunk()
        if self.cfg.keypoints:
            self.keypoint_maps = nn.ModuleList(nn.Conv2d(STAGE_CHANNELS[level], self.cfg.keypoints, 1)
                                               for level in self.cfg.keypoint_levels)
            self.keypoint_log_temperature = nn.Parameter(torch.zeros(len(self.cfg.keypoint_levels)))

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
        dtype = self.model[0].weight.dtype  # float32, or bfloat16 under precision bf16-all
        if not self.cfg.keypoints:
            x = self.model(x.to(dtype))  # (b, 512, 7, 7)
            return x.flatten(2).transpose(1, 2).float()  # (b, 49, 512)
        x, maps = trunk_features(self.model, x.to(dtype), self.cfg.keypoint_levels)
        patches = x.flatten(2).transpose(1, 2).float()  # (b, P, 512)
        embedding = keypoint_embedding(self.keypoint_positions(maps), patches.shape[-1])  # (b, K L, 512)
        return torch.cat([patches, embedding], dim=1)

    def keypoint_positions(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """The stages' maps (:func:`trunk_features` at ``keypoint_levels``) -> keypoints (b, K L, 2) in [-1, 1],
        level by level."""
        temperature = self.keypoint_log_temperature.float().exp()
        return torch.cat([spatial_soft_argmax(conv(m.to(conv.weight.dtype)).float() / temperature[i])
                          for i, (conv, m) in enumerate(zip(self.keypoint_maps, maps))], dim=1)
