"""CIFAR ResNets (He et al. 2016, §4.2): 6n+2 layers, three stages of n basic blocks."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def option_a_shortcut(x: torch.Tensor, stride: int, pad: int) -> torch.Tensor:
    """He et al.'s parameter-free shortcut: strided identity, ``pad`` zero channels split front/back."""
    if stride != 1:
        x = x[:, :, ::stride, ::stride]
    if pad:
        x = F.pad(x, (0, 0, 0, 0, pad // 2, pad - pad // 2))
    return x


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a parameter-free shortcut (option A: strided identity,
    zero-padded channels), as in the CIFAR experiments of He et al."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.stride = stride
        self.pad = out_ch - in_ch

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return option_a_shortcut(x, self.stride, self.pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def resnet_stem(width: int) -> nn.Module:
    """First layer: 3x3 conv to ``width`` channels, BN, ReLU (kept full precision)."""
    return nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))


def resnet_block_plan(depth: int, width: int) -> list[tuple[int, int, int]]:
    """(in_channels, out_channels, stride) for each block of a 6n+2-layer CIFAR ResNet."""
    n = (depth - 2) // 6
    plan, in_ch = [], width
    for stage in range(3):
        out_ch = width * 2**stage
        for i in range(n):
            stride = 2 if (stage > 0 and i == 0) else 1
            plan.append((in_ch, out_ch, stride))
            in_ch = out_ch
    return plan
