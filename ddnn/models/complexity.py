"""MAC and parameter counts, per layer and per edge/cloud part."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ddnn.data import IMAGE_SHAPE_CHW


@dataclass(frozen=True)
class LayerCost:
    """Cost of one conv or linear layer for a single 32x32 input."""

    name: str
    kind: str  # "conv" | "linear"
    macs: int
    params: int
    bits: int  # weight/activation precision of the multiply (32 = full precision)


def layer_costs(module: nn.Module, input_shape: tuple[int, ...] = (1, *IMAGE_SHAPE_CHW),
                dtype: torch.dtype = torch.float32) -> list[LayerCost]:
    """Trace ``module`` on one input and return the MACs of every Conv2d and Linear layer."""
    costs: list[LayerCost] = []
    names = {m: n for n, m in module.named_modules()}
    hooks = []

    def hook(m, inputs, output):
        params = sum(p.numel() for p in m.parameters(recurse=False))
        bits = int(getattr(m, "bits", 32))
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
            costs.append(LayerCost(names[m], "conv", output.numel() // output.shape[0] * k, params, bits))
        else:
            costs.append(LayerCost(names[m], "linear", m.in_features * m.out_features, params, bits))

    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            hooks.append(m.register_forward_hook(hook))
    # Restore each submodule's own mode: parts share modules with the full model.
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        with torch.no_grad():
            module(torch.zeros(input_shape, dtype=dtype))
    finally:
        for h in hooks:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return costs


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_macs(module: nn.Module, input_shape: tuple[int, ...] = (1, *IMAGE_SHAPE_CHW),
               dtype: torch.dtype = torch.float32) -> int:
    return sum(c.macs for c in layer_costs(module, input_shape, dtype))
