"""The train/validation split every part of ddnn agrees on (training, calibration, int8, val packs)."""

from __future__ import annotations

import numpy as np


def train_val_split(labels: np.ndarray, val_fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic, class-stratified split of training indices into (train, validation).

    The validation part is what calibration fits thresholds on; the test split is never used
    for that. Each class contributes ``round(val_fraction * n_class)`` samples.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    train_idx, val_idx = [], []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        idx = idx[rng.permutation(len(idx))]
        n_val = round(val_fraction * len(idx))
        val_idx.append(idx[:n_val])
        train_idx.append(idx[n_val:])
    return np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(val_idx))
