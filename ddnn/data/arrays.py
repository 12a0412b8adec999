"""The in-memory form every dataset layout decodes to."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# One input image, as every layer sees it: uint8 pixels, height x width x channels (CIFAR's 32x32 RGB).
IMAGE_SHAPE: tuple[int, int, int] = (32, 32, 3)
# The same image as the networks take it (channels first), and its size in bytes on the wire.
IMAGE_SHAPE_CHW: tuple[int, int, int] = (IMAGE_SHAPE[2], IMAGE_SHAPE[0], IMAGE_SHAPE[1])
IMAGE_BYTES = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]


@dataclass(frozen=True)
class ImageArrays:
    """Decoded images with labels.

    Attributes:
        images: uint8 array, shape (N, *IMAGE_SHAPE) = (N, 32, 32, 3), RGB, height-width-channel.
        labels: int64 array, shape (N,).
        classes: class names, index = label.
        name: dataset name, e.g. ``cifar10``.
        split: ``train`` or ``test`` (or a derived name such as ``val``).
        source: where the arrays were read from (path or URL).
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    name: str
    split: str
    source: str

    def __post_init__(self):
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[3] != 3:
            raise ValueError(f"images must be uint8 (N,H,W,3), got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels shape {self.labels.shape} does not match {self.images.shape[0]} images")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, indices: np.ndarray, split: str | None = None) -> ImageArrays:
        """Rows ``indices`` as a new ImageArrays (copies)."""
        return ImageArrays(
            images=self.images[indices],
            labels=self.labels[indices],
            classes=self.classes,
            name=self.name,
            split=split or self.split,
            source=self.source,
        )
