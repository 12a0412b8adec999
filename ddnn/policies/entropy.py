"""Entropy-based exit criteria (BranchyNet; normalized entropy as in DDNN / Lee et al.)."""

from __future__ import annotations

import numpy as np


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row of ``probs``; 0 log 0 = 0."""
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -terms.sum(axis=1)


def normalized_entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy divided by log(C): 0 (one-hot) .. 1 (uniform)."""
    return entropy(probs) / np.log(probs.shape[1])
