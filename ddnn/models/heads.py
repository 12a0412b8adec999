"""Classifier heads: early exits (average pooling + FC, as in Long et al.) and the final head."""

from __future__ import annotations

import torch
from torch import nn


class ExitHead(nn.Module):
    """Average pooling with a fixed kernel, then one fully connected layer.

    The pooled map keeps some spatial layout (e.g. 64x2x2 after an 8x8 stage with kernel 4), so
    exits earlier in the network have more inputs, as in Long et al. Fig. 3.
    """

    def __init__(self, channels: int, spatial: int, num_classes: int, pool: int = 4):
        super().__init__()
        k = min(pool, spatial)
        self.pool = nn.AvgPool2d(k, k)
        out = spatial // k
        self.fc = nn.Linear(channels * out * out, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))


class FinalHead(nn.Module):
    """Global average pooling + FC (the standard ResNet classifier)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))
