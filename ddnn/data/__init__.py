"""Datasets: CIFAR-10/100 in pickle, ImageFolder and pack layouts, cached as arrays."""

from ddnn.data.arrays import ImageArrays
from ddnn.data.download import ARCHIVES, download_cifar
from ddnn.data.errors import DatasetError
from ddnn.data.layouts import detect_layout
from ddnn.data.loading import load_split, train_val_split
from ddnn.data.pack import read_pack, write_pack
from ddnn.data.transforms import random_crop_flip, to_tensor

__all__ = [
    "ARCHIVES",
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
