"""Entropy-based exit criteria (BranchyNet; normalized entropy as in DDNN / Lee et al.)."""

from __future__ import annotations

import math
from abc import abstractmethod

import numpy as np

from ddnn.policies.base import ExitCriterion
from ddnn.policies.params import checked_number, number_field
from ddnn.policies.scores import entropy, normalized_entropy


class _EntropyBelow(ExitCriterion):
    """Exit when an entropy score is strictly below ``threshold``.

    The reported confidence is ``1 - normalized entropy`` for both kinds, so that, as for every
    other criterion, a higher confidence means a surer answer (1 = one-hot, 0 = uniform).
    """

    knob_increases_exits = True
    _max_threshold = np.inf

    def __init__(self, threshold: float):
        self.threshold = checked_number(threshold, f"{self.kind} threshold", 0.0, self._max_threshold)

    @abstractmethod
    def score(self, probs: np.ndarray) -> np.ndarray:
        """The quantity compared with the threshold."""

    @property
    def knob(self) -> float:
        return self.threshold

    def with_knob(self, value: float):
        return type(self)(value)

    def confidence(self, probs: np.ndarray) -> np.ndarray:
        return 1.0 - normalized_entropy(probs)

    def accept(self, probs: np.ndarray) -> np.ndarray:
        return self.score(probs) < self.threshold

    def critical_knob(self, probs: np.ndarray) -> np.ndarray:
        """Per sample, the knob value where its decision flips: it exits iff knob > this value."""
        return self.score(probs)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "threshold": self.threshold}

    @classmethod
    def _from_dict(cls, d: dict):
        return cls(number_field(d, "threshold"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threshold={self.threshold!r})"


class EntropyCriterion(_EntropyBelow):
    """BranchyNet (Lo et al. Eq. 3-4): exit when the entropy in nats is below ``threshold``.

    The threshold lies in [0, log C]; 0 lets no sample exit, log C lets all but exactly uniform
    outputs exit.
    """

    kind = "entropy"

    def knob_bounds(self, num_classes: int) -> tuple[float, float | None]:
        return 0.0, math.log(num_classes)

    def score(self, probs: np.ndarray) -> np.ndarray:
        return entropy(probs)


class NormalizedEntropyCriterion(_EntropyBelow):
    """DDNN / Lee et al. Eq. 1: exit when entropy / log C is below ``threshold`` in [0, 1]."""

    kind = "normalized_entropy"
    _max_threshold = 1.0

    def knob_bounds(self, num_classes: int) -> tuple[float, float | None]:
        return 0.0, 1.0

    def score(self, probs: np.ndarray) -> np.ndarray:
        return normalized_entropy(probs)
