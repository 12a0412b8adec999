"""Load any accepted layout into arrays, decoding once and caching the result."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from ddnn.data.arrays import ImageArrays
from ddnn.data.errors import DatasetError
from ddnn.data.layouts import (
    IMAGE_SUFFIXES,
    detect_layout,
    read_cifar10_pickle,
    read_cifar100_pickle,
    read_imagefolder,
)
from ddnn.data.pack import read_pack, read_pack_meta
from ddnn.paths import cache_dir

log = logging.getLogger(__name__)
_CACHE_VERSION = 1


def _fingerprint(layout: str, path: Path, split: str) -> str:
    """A cheap identity of the source: file sizes and mtimes, or the pack's checksum."""
    h = hashlib.sha256(f"{_CACHE_VERSION}|{layout}|{path.resolve()}|{split}".encode())
    if layout == "pack":
        h.update(read_pack_meta(path)["sha256"].encode())
        return h.hexdigest()[:24]
    if layout == "imagefolder":
        base = path / split
        files = (os.path.join(d, f) for d, _, fs in os.walk(base) for f in fs)
        entries = sorted(f for f in files if f.lower().endswith(IMAGE_SUFFIXES))
    else:
        entries = sorted(str(p) for p in path.iterdir() if p.is_file())
    for f in entries:
        st = os.stat(f)
        h.update(f"{f}|{st.st_size}|{int(st.st_mtime)}".encode())
    return h.hexdigest()[:24]


def _read(layout: str, path: Path, split: str) -> ImageArrays:
    if layout == "pack":
        return read_pack(path, split)
    if layout == "cifar10-pickle":
        return read_cifar10_pickle(path, split)
    if layout == "cifar100-pickle":
        return read_cifar100_pickle(path, split)
    return read_imagefolder(path, split)


def load_split(root: str | Path, split: str = "test", use_cache: bool = True) -> ImageArrays:
    """Load one split (``train`` or ``test``) of the dataset at ``root``.

    ``root`` may be a pack file, a folder in a CIFAR pickle layout, or an ImageFolder root.
    Decoded arrays are cached under :func:`ddnn.paths.cache_dir`, keyed by the source's
    identity, so a second load costs a file read instead of decoding every image.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    layout, path = detect_layout(Path(root))
    if layout == "pack" and read_pack_meta(path)["split"] != split:
        raise DatasetError(path, f"pack holds the '{read_pack_meta(path)['split']}' split, not '{split}'")
    if not use_cache:
        return _read(layout, path, split)
    key = _fingerprint(layout, path, split)
    cached = cache_dir() / f"{key}.npz"
    if cached.is_file():
        try:
            with np.load(cached, allow_pickle=False) as z:
                return ImageArrays(
                    z["images"], z["labels"], tuple(str(c) for c in z["classes"]),
                    str(z["name"]), split, str(path),
                )
        except (OSError, ValueError, KeyError):
            log.warning("ignoring unreadable cache file %s", cached)
    log.info("decoding %s split of %s (%s); caching to %s", split, path, layout, cached)
    arrays = _read(layout, path, split)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, images=arrays.images, labels=arrays.labels,
             classes=np.array(arrays.classes), name=np.array(arrays.name))
    os.replace(tmp, cached)
    return arrays
