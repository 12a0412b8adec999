"""The authentic-operation (AO) unit of Lo et al. (§III-B/C): top1 − top2 softmax margins
against pair-wise thresholds T_(a,b) (Eq. 6), falling back to per-class thresholds T_a (Eq. 7),
each chosen by Gaussian KDE where correct predictions overtake incorrect ones.

Choices the paper leaves open, made here:

* **Weighting.** Each density is the KDE *scaled by its sample count* (a sum of kernels, not a
  mean), so ``n_c f_c(m) / n_i f_i(m)`` is the posterior odds P(correct | margin m) /
  P(incorrect | m) within a group. Knob ``ratio`` r = 1 is the paper's "the probability of a
  correct prediction is higher than that of an incorrect one"; unit-mass densities would instead
  compare likelihoods and ignore that most predictions of a good network are correct.
* **Which crossing.** T is where the odds last rise to r: the smallest margin from which they
  stay >= r up to a margin of 1. A stray confident mistake thus raises T rather than opening a
  window of accepted margins, and T is nondecreasing in r (exit rate monotone in the knob).
* **The knob.** One global r for all groups: r < 1 lets more samples exit, r > 1 fewer; r = 0
  lets every sample exit.
* **Fallback.** A pair (a, b) gets its own threshold when it has at least ``min_pair_samples``
  validation samples and at least one incorrect prediction; otherwise the class threshold T_a
  of its top-1 class applies (a pair that never erred on a few dozen samples is no evidence
  that it never errs).
* **Degenerate groups.** A class with no incorrect validation predictions always exits (T = 0);
  one with no correct predictions never exits (T = +inf, for any r > 0); a class that was never
  the top-1 prediction on validation uses the threshold pooled over all samples.

The fitted state is the log posterior odds of each group on an evenly spaced margin grid
(clipped to ±``LOG_ODDS_CLIP``), so ``with_knob`` recomputes every threshold without the
validation data and the policy JSON stays small.
"""

from __future__ import annotations

import copy
import math
from typing import TypeGuard

import numpy as np

from ddnn.errors import PolicyError
from ddnn.policies.base import ExitCriterion
from ddnn.policies.kde import curve_floor_at, log_kde_mass, overtake_points, unit_grid
from ddnn.policies.params import checked_number, number_field

DEFAULT_BANDWIDTH = 0.05  # Lo et al. §III-C
DEFAULT_MIN_PAIR_SAMPLES = 40
DEFAULT_GRID_POINTS = 33  # step 1/32 < the bandwidth: the log odds are close to linear between points
LOG_ODDS_CLIP = 25.0  # odds beyond e^25 ~ 7e10 are all the same decision for any practical knob


def top2(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: top-1 class a (the argmax), top-2 class b, and the margin S_a − S_b (Eq. 5)."""
    p = np.asarray(probs, dtype=np.float64)
    rows = np.arange(len(p))
    a = p.argmax(axis=1)
    rest = p.copy()
    rest[rows, a] = -np.inf
    b = rest.argmax(axis=1)
    return a, b, p[rows, a] - p[rows, b]


class AoMarginCriterion(ExitCriterion):
    """Exit when margin(a, b) >= T_(a,b) (or T_a): Lo et al.'s AO unit, one knob ``ratio``.

    Build one with :func:`fit_ao_margin`. ``groups`` maps a group key to its fitted curve:
    ``"*"`` (pooled over all samples), ``"a"`` (top-1 class a) or ``"a,b"`` (pair), each a dict
    with ``n_correct``, ``n_incorrect`` and ``log_odds`` (G values on the margin grid, or None
    for a degenerate group, whose odds follow from the counts). The reported confidence is the
    margin.
    """

    kind = "ao_margin"
    knob_increases_exits = False

    def __init__(self, num_classes: int, groups: dict[str, dict], ratio: float = 1.0,
                 bandwidth: float = DEFAULT_BANDWIDTH, min_pair_samples: int = DEFAULT_MIN_PAIR_SAMPLES,
                 grid_points: int = DEFAULT_GRID_POINTS):
        if not isinstance(num_classes, int) or num_classes < 2:
            raise PolicyError(f"ao_margin: num_classes must be an integer >= 2, got {num_classes!r}")
        if not isinstance(grid_points, int) or grid_points < 2:
            raise PolicyError(f"ao_margin: grid_points must be an integer >= 2, got {grid_points!r}")
        self.num_classes = num_classes
        self.ratio = checked_number(ratio, "ao_margin ratio")
        self.bandwidth = checked_number(bandwidth, "ao_margin bandwidth", 1e-6, 1.0)
        self.min_pair_samples = int(min_pair_samples)
        self.grid = unit_grid(grid_points)
        self.groups = {k: _checked_group(k, g, num_classes, grid_points) for k, g in groups.items()}
        if "*" not in self.groups:
            raise PolicyError("ao_margin: groups must include the pooled group '*'")
        keys = list(self.groups)
        self._curves = np.stack([_curve(self.groups[k], grid_points) for k in keys])
        # group_of[a, b]: row of _curves that judges top-1 a with runner-up b.
        row = {k: i for i, k in enumerate(keys)}
        cls_row = np.array([row.get(str(a), row["*"]) for a in range(num_classes)])
        self._group_of = np.repeat(cls_row[:, None], num_classes, axis=1)
        for k in keys:
            if "," in k:
                a, b = (int(t) for t in k.split(","))
                self._group_of[a, b] = row[k]
        self._keys = keys
        self._thresholds = overtake_points(self._curves, self.grid, self._level)

    @property
    def _level(self) -> float:
        return math.log(self.ratio) if self.ratio > 0 else -math.inf

    @property
    def knob(self) -> float:
        return self.ratio

    def with_knob(self, value: float) -> AoMarginCriterion:
        # The fitted curves are shared and never mutated; only the thresholds depend on the knob.
        other = copy.copy(self)
        other.ratio = checked_number(value, "ao_margin ratio")
        other._thresholds = overtake_points(other._curves, other.grid, other._level)
        return other

    def confidence(self, probs: np.ndarray) -> np.ndarray:
        return top2(probs)[2]

    def threshold_matrix(self) -> np.ndarray:
        """(C, C) array: the threshold applied when a is top-1 and b top-2 (diagonal unused)."""
        return self._thresholds[self._group_of]

    def thresholds(self) -> dict[str, float]:
        """Threshold of each fitted group at the current knob: ``"a"`` = T_a, ``"a,b"`` = T_(a,b)."""
        return {k: float(t) for k, t in zip(self._keys, self._thresholds, strict=True)}

    def accept(self, probs: np.ndarray) -> np.ndarray:
        self._check_classes(probs)
        a, b, margin = top2(probs)
        return margin >= self._thresholds[self._group_of[a, b]]

    def critical_knob(self, probs: np.ndarray) -> np.ndarray:
        """Per sample, the knob value where its decision flips: it exits iff knob <= this value."""
        self._check_classes(probs)
        a, b, margin = top2(probs)
        with np.errstate(over="ignore"):
            return np.exp(curve_floor_at(self._curves, self._group_of[a, b], self.grid, margin))

    def knob_bounds(self, num_classes: int) -> tuple[float, float | None]:
        return 0.0, None  # any odds ratio >= 0

    def _check_classes(self, probs: np.ndarray) -> None:
        if probs.shape[1] != self.num_classes:
            raise PolicyError(f"ao_margin was fitted for {self.num_classes} classes, got outputs of "
                              f"{probs.shape[1]}")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "ratio": self.ratio, "num_classes": self.num_classes,
                "bandwidth": self.bandwidth, "min_pair_samples": self.min_pair_samples,
                "grid_points": len(self.grid), "groups": copy.deepcopy(self.groups)}

    @classmethod
    def _from_dict(cls, d: dict) -> AoMarginCriterion:
        for name in ("num_classes", "grid_points", "min_pair_samples"):
            if not isinstance(d.get(name), int) or isinstance(d.get(name), bool):
                raise PolicyError(f"ao_margin criterion: field {name!r} must be an integer, got {d.get(name)!r}")
        if not isinstance(d.get("groups"), dict):
            raise PolicyError("ao_margin criterion: field 'groups' must map group keys to fitted curves")
        return cls(d["num_classes"], d["groups"], number_field(d, "ratio"), number_field(d, "bandwidth"),
                   d["min_pair_samples"], d["grid_points"])

    def __repr__(self) -> str:
        pairs = sum("," in k for k in self._keys)
        return (f"AoMarginCriterion(ratio={self.ratio!r}, classes={self.num_classes}, pairs={pairs}, "
                f"bandwidth={self.bandwidth!r})")


def fit_ao_margin(probs: np.ndarray, labels: np.ndarray, bandwidth: float = DEFAULT_BANDWIDTH,
                  min_pair_samples: int = DEFAULT_MIN_PAIR_SAMPLES, ratio: float = 1.0, pairwise: bool = True,
                  grid_points: int = DEFAULT_GRID_POINTS) -> AoMarginCriterion:
    """Fit AO thresholds on validation softmax outputs ``probs`` (N, C) with true ``labels`` (N,).

    Args:
        bandwidth: Gaussian kernel standard deviation, in margin units (the paper uses 0.05).
        min_pair_samples: fewest samples for a (top-1, top-2) pair to get its own threshold.
        ratio: the knob, required posterior odds of a correct prediction (1 = the paper).
        pairwise: False fits per-class thresholds only (Eq. 7).
        grid_points: resolution of the stored curves on [0, 1].
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or probs.shape[0] == 0 or labels.shape != (probs.shape[0],):
        raise ValueError(f"need probs (N, C) with N > 0 and labels (N,), got {probs.shape} and {labels.shape}")
    if min_pair_samples < 1:
        raise ValueError(f"min_pair_samples must be >= 1, got {min_pair_samples}")
    num_classes = probs.shape[1]
    grid = unit_grid(grid_points)
    a, b, margin = top2(probs)
    correct = a == labels

    def group(mask: np.ndarray) -> dict:
        good, bad = margin[mask & correct], margin[mask & ~correct]
        curve = None
        if len(good) and len(bad):
            log_odds = log_kde_mass(good, grid, bandwidth) - log_kde_mass(bad, grid, bandwidth)
            curve = np.round(np.clip(log_odds, -LOG_ODDS_CLIP, LOG_ODDS_CLIP), 2).tolist()
        return {"n_correct": len(good), "n_incorrect": len(bad), "log_odds": curve}

    groups = {"*": group(np.ones(len(a), dtype=bool))}
    for c in range(num_classes):
        if (a == c).any():
            groups[str(c)] = group(a == c)
    if pairwise:
        # Only pairs that occur need a look; np.unique keeps this O(N log N), not O(C^2).
        pair_ids, counts = np.unique(a * num_classes + b, return_counts=True)
        for pid, n in zip(pair_ids, counts, strict=True):
            if n < min_pair_samples:
                continue
            mask = (a * num_classes + b) == pid
            if correct[mask].all():
                continue  # no observed error: the class threshold applies (see module docstring)
            groups[f"{pid // num_classes},{pid % num_classes}"] = group(mask)
    return AoMarginCriterion(num_classes, groups, ratio, bandwidth, min_pair_samples, grid_points)


def _curve(g: dict, points: int) -> np.ndarray:
    """The log-odds row of a group; degenerate groups become all +inf / all -inf."""
    if g["log_odds"] is not None:
        return np.asarray(g["log_odds"], dtype=np.float64)
    return np.full(points, np.inf if g["n_incorrect"] == 0 else -np.inf)


def _is_count(n: object) -> TypeGuard[int]:
    """A JSON sample count: a non-negative int (not a bool)."""
    return isinstance(n, int) and not isinstance(n, bool) and n >= 0


def _checked_group(key: str, g: dict, num_classes: int, points: int) -> dict:
    """Validate one group read from JSON (or built by the fitter); PolicyError names the group."""
    where = f"ao_margin group {key!r}"
    parts = key.split(",") if key != "*" else []
    valid = all(p.isdigit() and int(p) < num_classes for p in parts) and len(parts) == len(set(parts))
    if key != "*" and not (valid and len(parts) in (1, 2)):
        raise PolicyError(f"{where}: key must be '*', a class index or 'a,b' (a != b), indices below {num_classes}")
    if not isinstance(g, dict):
        raise PolicyError(f"{where}: expected an object")
    nc, ni = g.get("n_correct"), g.get("n_incorrect")
    if not (_is_count(nc) and _is_count(ni)) or nc + ni == 0:
        raise PolicyError(f"{where}: n_correct and n_incorrect must be non-negative integers, not both 0")
    curve = g.get("log_odds")
    if (curve is None) != (nc == 0 or ni == 0):
        raise PolicyError(f"{where}: log_odds must be given exactly when both counts are positive")
    if curve is not None:
        try:
            arr = np.asarray(curve, dtype=np.float64) if isinstance(curve, list) else None
        except (TypeError, ValueError):
            arr = None
        if arr is None or arr.shape != (points,) or not np.isfinite(arr).all():
            raise PolicyError(f"{where}: log_odds must be a list of {points} finite numbers")
    return {"n_correct": nc, "n_incorrect": ni, "log_odds": None if curve is None else [float(v) for v in curve]}
