"""Datasets: CIFAR-10/100 in pickle, ImageFolder and pack layouts, cached as arrays.

The torch transforms (``to_tensor``, ``random_crop_flip``) load torch on first use only, so the
serving processes can read datasets without it.
"""

from ddnn.data.arrays import IMAGE_BYTES, IMAGE_SHAPE, IMAGE_SHAPE_CHW, ImageArrays
from ddnn.data.download import ARCHIVES, download_cifar
from ddnn.data.errors import DatasetError
from ddnn.data.layouts import detect_layout
from ddnn.data.loading import load_split
from ddnn.data.pack import read_pack, write_pack
from ddnn.data.splits import train_val_split

__all__ = [
    "ARCHIVES",
    "IMAGE_BYTES",
    "IMAGE_SHAPE",
    "IMAGE_SHAPE_CHW",
    "DatasetError",
    "ImageArrays",
    "detect_layout",
    "download_cifar",
    "load_split",
    "random_crop_flip",
    "read_pack",
    "to_tensor",
    "train_val_split",
    "write_pack",
]


def __getattr__(name: str):
    if name in ("to_tensor", "random_crop_flip"):
        from ddnn.data import transforms

        return getattr(transforms, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
