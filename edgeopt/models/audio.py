"""Audio classifiers on log-mel spectrograms shaped ``[batch, 1, n_mels, frames]``.

- `VggAudio`: the VGG-style speech-emotion CNN (3x3 conv-BN-ReLU stacks and 2x2 max-pools, then global
  average pooling), laid out like torchvision's VGG (``features`` / ``avgpool`` / ``classifier``) and
  configured by the same kind of list (ints = conv widths, "M" = max-pool).
- `DSCNN`: the depthwise-separable keyword-spotting CNN of "Hello Edge" (Zhang et al., 2017): one
  strided full conv, then depthwise 3x3 + pointwise 1x1 blocks, average pooling and a linear layer.
Global pooling makes both independent of the exact number of frames.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from edgeopt.models.registry import register_model

# 1x64x128 log-mel in: four pooling stages leave a 4x8 map
VGG_AUDIO_CFG = [32, "M", 64, 64, "M", 128, 128, "M", 256, 256, "M"]
# the distillation student: half the widths and one conv fewer, under 1/4 of the teacher's MACs
VGG_AUDIO_SMALL_CFG = [16, "M", 32, 32, "M", 64, 64, "M", 128, "M"]


class VggAudio(nn.Module):
    def __init__(self, cfg: Sequence[int | str] = VGG_AUDIO_CFG, num_classes: int = 8, in_channels: int = 1,
                 dropout: float = 0.3):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, int(v), 3, padding=1, bias=False), nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
                channels = int(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class DepthwiseSeparable(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.pointwise = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.relu(self.bn1(self.depthwise(x)))
        return self.relu(self.bn2(self.pointwise(x)))


class DSCNN(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 64, num_blocks: int = 4, in_channels: int = 1,
                 dropout: float = 0.2):
        super().__init__()
        # a 4 (mel) x 10 (frame) kernel with stride 2, the Hello Edge stem transposed to mel-first layout
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, (4, 10), stride=2, padding=(1, 4), bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(*[DepthwiseSeparable(width) for _ in range(num_blocks)])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.blocks(self.stem(x))), 1))


@register_model("vgg_audio")
def vgg_audio(**kwargs) -> VggAudio:
    return VggAudio(VGG_AUDIO_CFG, **kwargs)


@register_model("vgg_audio_small")
def vgg_audio_small(**kwargs) -> VggAudio:
    return VggAudio(VGG_AUDIO_SMALL_CFG, **kwargs)


@register_model("dscnn")
def dscnn(**kwargs) -> DSCNN:
    return DSCNN(**kwargs)


@register_model("dscnn_large")
def dscnn_large(**kwargs) -> DSCNN:
    """Twice the width and one more block than `dscnn`: over 4x its MACs, the FSDD distillation teacher."""
    kwargs.setdefault("width", 128)
    kwargs.setdefault("num_blocks", 5)
    return DSCNN(**kwargs)


@register_model("dscnn_small")
def dscnn_small(**kwargs) -> DSCNN:
    kwargs.setdefault("width", 24)
    return DSCNN(**kwargs)
