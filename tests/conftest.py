"""Shared fixtures: tiny datasets in every accepted layout, made by the tests themselves."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own decode cache so tests never see each other's arrays."""
    monkeypatch.setenv("DDNN_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def random_images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _rows(images: np.ndarray) -> np.ndarray:
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def make_cifar10_pickles(root: Path, per_batch: int = 6, test: int = 8) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"class{i}" for i in range(10)]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names}, f)
    for b in range(1, 6):
        imgs = random_images(per_batch, seed=b)
        with open(folder / f"data_batch_{b}", "wb") as f:
            pickle.dump({"data": _rows(imgs), "labels": [(b + i) % 10 for i in range(per_batch)]}, f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": _rows(random_images(test, seed=99)), "labels": [i % 10 for i in range(test)]}, f)
    return folder


def make_cifar100_pickles(root: Path, train: int = 12, test: int = 6) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"fine{i}" for i in range(100)],
                     "coarse_label_names": [f"coarse{i}" for i in range(20)]}, f)
    for split, n in (("train", train), ("test", test)):
        with open(folder / split, "wb") as f:
            pickle.dump({"data": _rows(random_images(n, seed=n)), "fine_labels": [(7 * i) % 100 for i in range(n)],
                         "coarse_labels": [i % 20 for i in range(n)]}, f)
    return folder


def make_imagefolder(root: Path, classes=("cat", "dog", "ship"), per_class: int = 4, fmt: str = "png") -> Path:
    for split in ("train", "test"):
        for c, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True)
            for i, img in enumerate(random_images(per_class, seed=hash((split, c)) % 1000)):
                Image.fromarray(img).save(d / f"{i:04d}.{fmt}")
    return root


@pytest.fixture
def cifar10_pickles(tmp_path) -> Path:
    return make_cifar10_pickles(tmp_path)


@pytest.fixture
def cifar100_pickles(tmp_path) -> Path:
    return make_cifar100_pickles(tmp_path)


@pytest.fixture
def imagefolder(tmp_path) -> Path:
    return make_imagefolder(tmp_path / "folder")


@pytest.fixture
def cifar10_tarball(tmp_path) -> Path:
    """A cifar-10-python.tar.gz holding a tiny pickle tree, as the real archive is laid out."""
    src = make_cifar10_pickles(tmp_path / "src")
    out = tmp_path / "mirror" / "cifar-10-python.tar.gz"
    out.parent.mkdir()
    with tarfile.open(out, "w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-py")
    return out


def png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()
