"""Well-known locations: the repository's shipped files and user-overridable defaults."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_TEST_PACK = REPO_ROOT / "data" / "cifar10-test.npz"
SHIPPED_VAL_PACK = REPO_ROOT / "data" / "cifar10-val.npz"  # the shipped checkpoint's validation split
SHIPPED_CHECKPOINT = REPO_ROOT / "models" / "resnet20w32-cifar10.pt"
SHIPPED_POLICY = REPO_ROOT / "models" / "resnet20w32-cifar10.policy.json"
SHIPPED_INT8_POLICY = REPO_ROOT / "models" / "resnet20w32-cifar10.onnxruntime-int8.policy.json"
SHIPPED_BUNDLE = REPO_ROOT / "models" / "resnet20w32-cifar10.bundle"
SHIPPED_AUX_CHECKPOINT = REPO_ROOT / "models" / "resnet20-aux-cifar10.pt"
_SHARED_TRAIN = REPO_ROOT.parent / "shared" / "datasets" / "cifar10-jpeg"


def cache_dir() -> Path:
    """Where decoded arrays are cached (``DDNN_CACHE_DIR``, default ``~/.cache/ddnn``)."""
    return Path(os.environ.get("DDNN_CACHE_DIR", Path.home() / ".cache" / "ddnn"))


def default_train_root() -> Path | None:
    """``DDNN_TRAIN_DATA`` if set, else ``../shared/datasets/cifar10-jpeg`` when it exists."""
    env = os.environ.get("DDNN_TRAIN_DATA")
    if env:
        return Path(env)
    return _SHARED_TRAIN if _SHARED_TRAIN.is_dir() else None


def default_test_source() -> Path:
    """``DDNN_TEST_DATA`` if set, else the CIFAR-10 test pack shipped in ``data/``."""
    env = os.environ.get("DDNN_TEST_DATA")
    return Path(env) if env else SHIPPED_TEST_PACK
