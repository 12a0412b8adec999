"""Batched, device-side image transforms (no per-sample Python on the hot path)."""

from __future__ import annotations

import numpy as np
import torch

# Per-channel statistics of the CIFAR-10 training set (0-255 scale).
CIFAR_MEAN = (125.307, 122.950, 113.865)
CIFAR_STD = (62.993, 62.089, 66.705)


def to_tensor(images: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 NHWC images -> float32 NCHW tensor, normalized by the CIFAR mean/std."""
    if isinstance(images, np.ndarray) and not images.flags.writeable:
        images = images.copy()  # torch cannot wrap a read-only buffer (decoded protobuf bytes, mmaps)
    x = torch.as_tensor(images, device=device)
    if x.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {x.dtype}")
    x = x.permute(0, 3, 1, 2).float()
    mean = torch.tensor(CIFAR_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = 4,
                     flip: torch.Tensor | None = None) -> torch.Tensor:
    """Standard CIFAR augmentation on a normalized NCHW batch: pad-and-crop plus horizontal flip.

    Padding is with zeros in the normalized space (the mean pixel), as in He et al. ``flip`` (a bool
    per image) chooses the flips, e.g. alternating flips; by default each image flips at random.
    """
    b, c, h, w = x.shape
    dev = x.device
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=generator.device).to(dev)
    ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=generator.device).to(dev)
    if flip is None:
        flip = torch.rand(b, generator=generator, device=generator.device) < 0.5
    flip = flip.to(dev)
    rows = oy[:, None] + torch.arange(h, device=dev)[None, :]
    cols = ox[:, None] + torch.arange(w, device=dev)[None, :]
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    bi = torch.arange(b, device=dev)[:, None, None, None]
    ci = torch.arange(c, device=dev)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]
