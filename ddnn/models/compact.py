"""A compact multi-exit CNN that trains fast on a CPU (the airbench architecture, with early exits).

Jordan's airbench94 ("94% on CIFAR-10 in 3.29 seconds") is a 2x2 *whitening* convolution whose
filters come from the eigenvectors of the training images' patch covariance (fixed, only its bias
learns), then three groups of [conv3x3, max-pool 2, BN, GELU, conv3x3, BN, GELU] with widths
w, 4w, 4w (w = 64 there), then a global max-pool and a linear layer scaled by 1/9. Written here
from the paper's description; early exits (average pooling + FC, as in Long et al.) may follow
group 1 or 2, so the edge can run WS mode (after group 1) and normal mode (after group 2).
"""

from __future__ import annotations

import torch
from torch import nn

WHITEN_KERNEL = 2
GROUP_MULTIPLIERS = (1, 4, 4)
FINAL_SCALE = 1 / 9  # airbench's output temperature: logits of a max-pooled head run hot


class WhiteningStem(nn.Module):
    """2x2 convolution (no padding) with fixed filters +v/sqrt(λ+ε) and -v/sqrt(λ+ε) for every
    eigenpair (λ, v) of the 2x2x3 patch covariance, then GELU; only the bias learns."""

    def __init__(self, kernel: int = WHITEN_KERNEL):
        super().__init__()
        channels = 2 * 3 * kernel * kernel
        self.conv = nn.Conv2d(3, channels, kernel, padding=0, bias=True)
        self.conv.weight.requires_grad_(False)
        self.act = nn.GELU()

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels

    @torch.no_grad()
    def init_from(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the filters from normalized NCHW ``images`` (a few thousand are plenty)."""
        k = self.conv.kernel_size[0]
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)  # N, C, H', W', k, k
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3 * k * k)
        patches = patches - patches.mean(0, keepdim=True)
        cov = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)
        filters = (eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]).reshape(-1, 3, k, k)
        self.conv.weight.copy_(torch.cat([filters, -filters]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class ConvGroup(nn.Sequential):
    """conv3x3 -> max-pool 2 -> BN -> GELU -> conv3x3 -> BN -> GELU (airbench's ConvGroup).

    As in airbench the BN scales stay at 1 (only the shifts learn): with the recipe's large
    learning rates a learnable scale destabilises training."""

    def __init__(self, in_ch: int, out_ch: int):
        bn1, bn2 = nn.BatchNorm2d(out_ch), nn.BatchNorm2d(out_ch)
        for bn in (bn1, bn2):
            bn.weight.requires_grad_(False)
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.MaxPool2d(2), bn1, nn.GELU(),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False), bn2, nn.GELU(),
        )


class MaxPoolHead(nn.Module):
    """Global max-pool and a bias-free linear layer, scaled by 1/9 (airbench's classifier)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(channels, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_max_pool2d(x, 1), 1)) * FINAL_SCALE


def compact_plan(width: int) -> list[tuple[int, int]]:
    """(in_channels, out_channels) of the three groups after a whitening stem."""
    plan, in_ch = [], 2 * 3 * WHITEN_KERNEL * WHITEN_KERNEL
    for mult in GROUP_MULTIPLIERS:
        plan.append((in_ch, width * mult))
        in_ch = width * mult
    return plan


def whitening_stem(model: nn.Module) -> WhiteningStem | None:
    """The model's whitening stem, if it has one (compact architecture)."""
    stem = getattr(model, "stem", None)
    return stem if isinstance(stem, WhiteningStem) else None


@torch.no_grad()
def airbench_init(model: nn.Module) -> None:
    """Re-initialise a compact network as airbench does: PyTorch's default init for every convolution
    and the final layer, zero conv biases, and each convolution's first ``in_channels`` filters the
    identity (dirac), so every group starts by passing its input through. Exit heads are left alone."""
    parts: list[nn.Module] = [model.stem, model.blocks]  # type: ignore[list-item]  # nn.Module.__getattr__ is untyped
    convs = [m for part in parts for m in part.modules() if isinstance(m, nn.Conv2d)]
    for conv in convs:
        conv.reset_parameters()
        if conv.bias is not None:
            conv.bias.zero_()
        nn.init.dirac_(conv.weight[: conv.in_channels])
    final = getattr(model, "final", None)
    if isinstance(final, MaxPoolHead):
        final.fc.reset_parameters()
