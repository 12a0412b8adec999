"""Per-exit logits of a checkpoint over a dataset, computed once and cached on disk.

Every policy, calibration target and sweep point is then a cheap numpy computation on the
cached logits instead of a forward pass (the test split takes about a minute on a CPU).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ddnn.checkpoint import Checkpoint
from ddnn.data import ImageArrays, to_tensor
from ddnn.engines.base import TORCH_FP32, Backend, EngineSpec
from ddnn.paths import cache_dir

log = logging.getLogger(__name__)
_CACHE_VERSION = 1


def data_fingerprint(arrays: ImageArrays) -> str:
    """sha256 of the pixels and labels: the identity of a dataset for caching logits."""
    h = hashlib.sha256(f"v{_CACHE_VERSION}|{arrays.images.shape}".encode())
    h.update(np.ascontiguousarray(arrays.images).data)
    h.update(np.ascontiguousarray(arrays.labels, dtype=np.int64).data)
    return h.hexdigest()


def logits_cache_path(checkpoint: Checkpoint, arrays: ImageArrays, engine: EngineSpec = TORCH_FP32) -> Path:
    """Where the logits of ``checkpoint`` on ``arrays`` under ``engine`` are cached (in ``cache_dir()``)."""
    tail = "" if engine.name == TORCH_FP32.name else f"-{engine.name}"
    return cache_dir() / "logits" / f"{checkpoint.sha256[:20]}-{data_fingerprint(arrays)[:20]}{tail}.npz"


@torch.inference_mode()
def compute_logits(checkpoint: Checkpoint, images: np.ndarray, batch_size: int = 500,
                   progress: bool | None = None) -> dict[str, np.ndarray]:
    """Run the full model over uint8 NHWC ``images``; return float32 logits per exit (depth order)."""
    model = checkpoint.model.eval()
    device = next(model.parameters()).device
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in checkpoint.exit_names}
    starts = range(0, len(images), batch_size)
    disable = (not progress) if progress is not None else None  # None: tqdm shows it on a terminal only
    for i in tqdm(starts, desc="logits", unit="batch", disable=disable, leave=False):
        out = model(to_tensor(images[i : i + batch_size], device))
        for name, value in out.items():
            chunks[name].append(value.float().cpu().numpy())
    return {name: (np.concatenate(c) if c else np.zeros((0, checkpoint.spec.num_classes), np.float32))
            for name, c in chunks.items()}


def exit_logits(checkpoint: Checkpoint, arrays: ImageArrays, use_cache: bool = True,
                progress: bool | None = None, engine: EngineSpec | None = None) -> dict[str, np.ndarray]:
    """Per-exit logits of ``checkpoint`` on ``arrays`` under ``engine`` (default torch fp32), from the
    cache when it has them.

    The cache key is the checkpoint's sha256, :func:`data_fingerprint` and the engine, so a retrained
    checkpoint, different images or another engine never reuse stale logits. Other engines than
    torch run the checkpoint's export bundle (:func:`ddnn.export.cache.bundle_for`).
    """
    engine = engine or TORCH_FP32
    path = logits_cache_path(checkpoint, arrays, engine)
    if use_cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                cached = {name: z[name] for name in checkpoint.exit_names}
            if all(v.shape[0] == len(arrays) for v in cached.values()):
                log.debug("logits from cache %s", path)
                return cached
        except (OSError, ValueError, KeyError):
            pass
        log.warning("ignoring unreadable logits cache %s", path)
    log.info("computing logits of %s on %d images", Path(checkpoint.path).name or "checkpoint", len(arrays))
    if engine.backend == Backend.TORCH:
        logits = compute_logits(checkpoint, arrays.images, progress=progress)
    else:
        from ddnn.engines.logits import engine_exit_logits
        from ddnn.export.cache import bundle_for

        logits = engine_exit_logits(engine, bundle_for(checkpoint, engine.precision), arrays.images,
                                    progress=progress)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, **logits)
        os.replace(tmp, path)
    return logits
