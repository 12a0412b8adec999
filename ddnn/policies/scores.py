"""Per-sample scores of softmax outputs that criteria and drop rules compare with thresholds.

They live apart from the criteria so that :mod:`ddnn.policies.base` (the drop rule) and
:mod:`ddnn.policies.entropy` (the entropy criteria) both import them from below, instead of
importing each other.
"""

from __future__ import annotations

import numpy as np

_BIG = 1e300  # beyond any finite float32 logit, far enough from float64's limit that z - max stays finite


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable), finite for any input: an infinite logit (extreme but
    finite features can overflow float32 in the network) counts as +/-1e300, a NaN as the least
    likely class."""
    z = np.nan_to_num(np.asarray(logits, dtype=np.float64), nan=-_BIG, posinf=_BIG, neginf=-_BIG)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row of ``probs``; 0 log 0 = 0."""
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -terms.sum(axis=1)


def normalized_entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy divided by log(C): 0 (one-hot) .. 1 (uniform)."""
    return entropy(probs) / np.log(probs.shape[1])
