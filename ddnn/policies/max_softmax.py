"""CDL's exit criterion (Panda et al., as described by Lo et al. Eq. 2): exit when max softmax > T."""

from __future__ import annotations

import numpy as np

from ddnn.policies.base import ExitCriterion
from ddnn.policies.params import checked_number, number_field


class MaxSoftmaxCriterion(ExitCriterion):
    """Exit when the highest softmax probability is strictly above ``threshold`` (in [0, 1]).

    The knob is the threshold: 0 lets every sample exit, 1 lets none. The reported confidence is
    the highest probability itself.
    """

    kind = "max_softmax"
    knob_increases_exits = False

    def __init__(self, threshold: float):
        self.threshold = checked_number(threshold, "max_softmax threshold", 0.0, 1.0)

    @property
    def knob(self) -> float:
        return self.threshold

    def with_knob(self, value: float) -> MaxSoftmaxCriterion:
        return MaxSoftmaxCriterion(value)

    def confidence(self, probs: np.ndarray) -> np.ndarray:
        return np.asarray(probs, dtype=np.float64).max(axis=1)

    def accept(self, probs: np.ndarray) -> np.ndarray:
        return self.confidence(probs) > self.threshold

    def critical_knob(self, probs: np.ndarray) -> np.ndarray:
        """Per sample, the knob value where its decision flips: it exits iff knob < this value."""
        return self.confidence(probs)

    def knob_bounds(self, num_classes: int) -> tuple[float, float | None]:
        return 0.0, 1.0

    def to_dict(self) -> dict:
        return {"kind": self.kind, "threshold": self.threshold}

    @classmethod
    def _from_dict(cls, d: dict) -> MaxSoftmaxCriterion:
        return cls(number_field(d, "threshold"))

    def __repr__(self) -> str:
        return f"MaxSoftmaxCriterion(threshold={self.threshold!r})"
