"""Readers for the dataset layouts ddnn accepts, and detection of which one a path holds.

Layouts: the canonical CIFAR pickles (``cifar-10-batches-py/``, ``cifar-100-python/``),
ImageFolder trees (``<root>/<split>/<class>/*.jpg|png``) and ddnn's own pack file (the JPEG
bytes of one split in a single ``.npz``, see :mod:`ddnn.data.pack`).
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from ddnn.data.arrays import IMAGE_BYTES, IMAGE_SHAPE, IMAGE_SHAPE_CHW, ImageArrays
from ddnn.data.errors import DatasetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"
SPLITS = ("train", "test")


def detect_layout(root: Path) -> tuple[str, Path]:
    """Return ``(layout, path)`` for a dataset root, or raise DatasetError naming the path.

    ``layout`` is one of ``pack``, ``cifar10-pickle``, ``cifar100-pickle``, ``imagefolder``.
    """
    root = Path(root)
    if not root.exists():
        raise DatasetError(root, "path does not exist")
    if root.is_file():
        if root.suffix == ".npz":
            return "pack", root
        raise DatasetError(root, "is a file but not a ddnn pack (.npz)")
    for candidate in (root / CIFAR10_DIR, root):
        if (candidate / "batches.meta").is_file() and (candidate / "test_batch").is_file():
            return "cifar10-pickle", candidate
    for candidate in (root / CIFAR100_DIR, root):
        if (candidate / "meta").is_file() and (candidate / "test").is_file():
            return "cifar100-pickle", candidate
    if any((root / s).is_dir() for s in SPLITS):
        return "imagefolder", root
    raise DatasetError(root, "no recognised dataset layout found here")


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except FileNotFoundError:
        raise DatasetError(path, "file missing from the CIFAR pickle layout") from None
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DatasetError(path, f"not a readable CIFAR pickle ({exc})") from None


def _rows_to_images(path: Path, data) -> np.ndarray:
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != IMAGE_BYTES:
        raise DatasetError(path, f"'data' has shape {data.shape}, expected (N, {IMAGE_BYTES})")
    # Pickled rows are channel-planar (R plane, G plane, B plane) of 32x32.
    return np.ascontiguousarray(data.reshape(-1, *IMAGE_SHAPE_CHW).transpose(0, 2, 3, 1))


def read_cifar10_pickle(folder: Path, split: str) -> ImageArrays:
    """Read one split of the canonical CIFAR-10 python pickles."""
    meta = _unpickle(folder / "batches.meta")
    classes = tuple(meta["label_names"])
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels = [], []
    for name in names:
        batch = _unpickle(folder / name)
        if "data" not in batch or "labels" not in batch:
            raise DatasetError(folder / name, "missing 'data' or 'labels' key")
        images.append(_rows_to_images(folder / name, batch["data"]))
        labels.append(np.asarray(batch["labels"], dtype=np.int64))
    return ImageArrays(np.concatenate(images), np.concatenate(labels), classes, "cifar10", split, str(folder))


def read_cifar100_pickle(folder: Path, split: str) -> ImageArrays:
    """Read one split of the canonical CIFAR-100 python pickles (fine labels)."""
    meta = _unpickle(folder / "meta")
    classes = tuple(meta["fine_label_names"])
    batch = _unpickle(folder / split)
    if "data" not in batch or "fine_labels" not in batch:
        raise DatasetError(folder / split, "missing 'data' or 'fine_labels' key")
    images = _rows_to_images(folder / split, batch["data"])
    labels = np.asarray(batch["fine_labels"], dtype=np.int64)
    return ImageArrays(images, labels, classes, "cifar100", split, str(folder))


def list_imagefolder(root: Path, split: str) -> tuple[tuple[str, ...], list[Path], np.ndarray]:
    """Classes (sorted folder names), files (sorted by class, then name) and labels of a split."""
    split_dir = root / split
    if not split_dir.is_dir():
        raise DatasetError(split_dir, f"ImageFolder tree has no '{split}' folder")
    classes = tuple(sorted(p.name for p in split_dir.iterdir() if p.is_dir()))
    if not classes:
        raise DatasetError(split_dir, "no class folders")
    files: list[Path] = []
    labels: list[int] = []
    for idx, cls in enumerate(classes):
        found = sorted(p for p in (split_dir / cls).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        files.extend(found)
        labels.extend([idx] * len(found))
    if not files:
        raise DatasetError(split_dir, "class folders contain no .jpg/.png images")
    return classes, files, np.asarray(labels, dtype=np.int64)


def decode_images(blobs: Iterable[bytes], names: list[str] | None = None) -> np.ndarray:
    """Decode encoded images (JPEG/PNG bytes) to a uint8 (N, *IMAGE_SHAPE) array, in parallel."""
    blobs = list(blobs)

    def decode(i: int) -> np.ndarray:
        try:
            img = Image.open(io.BytesIO(blobs[i]))
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
        except Exception as exc:  # PIL raises many types for corrupt input
            where = names[i] if names else f"image #{i}"
            raise DatasetError(where, f"cannot decode image ({exc})") from None
        if arr.shape != IMAGE_SHAPE:
            where = names[i] if names else f"image #{i}"
            raise DatasetError(where, f"image is {arr.shape[1]}x{arr.shape[0]}, expected 32x32 RGB")
        return arr

    out = np.empty((len(blobs), *IMAGE_SHAPE), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=4) as pool:
        for i, arr in enumerate(pool.map(decode, range(len(blobs)), chunksize=256)):
            out[i] = arr
    return out


def read_imagefolder(root: Path, split: str, name: str | None = None) -> ImageArrays:
    """Read and decode one split of an ImageFolder tree."""
    classes, files, labels = list_imagefolder(root, split)
    blobs = [f.read_bytes() for f in files]
    images = decode_images(blobs, [str(f) for f in files])
    return ImageArrays(images, labels, classes, name or guess_name(classes), split, str(root))


def guess_name(classes: tuple[str, ...]) -> str:
    """``cifar10``/``cifar100`` by class count, else ``custom``."""
    return {10: "cifar10", 100: "cifar100"}.get(len(classes), "custom")
