"""The shipped checkpoint exported once per test process (several test modules compare against it)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile

import numpy as np

from ddnn.paths import SHIPPED_CHECKPOINT, SHIPPED_TEST_PACK


@functools.cache
def shipped_bundle():
    """The fp32 bundle of models/resnet20w32-cifar10.pt, in a temporary directory."""
    from ddnn.export.onnx import export_bundle

    root = tempfile.mkdtemp(prefix="ddnn-bundle-")
    atexit.register(shutil.rmtree, root, True)
    return export_bundle(SHIPPED_CHECKPOINT, root)


@functools.cache
def shipped_checkpoint():
    from ddnn.checkpoint import load_checkpoint

    return load_checkpoint(SHIPPED_CHECKPOINT)


@functools.cache
def sample_images(n: int = 48) -> np.ndarray:
    """The first ``n`` real CIFAR-10 test images (uint8 NHWC) of the shipped pack."""
    from ddnn.data import load_split

    return load_split(SHIPPED_TEST_PACK, "test").images[:n]
