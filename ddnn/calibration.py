"""Fit an :class:`~ddnn.policies.EdgePolicy` on the validation split to a target.

Targets: an overall accuracy, an edge exit rate, or an accuracy-loss budget against cloud-only
inference. One knob value is shared by every active edge exit (for AO the thresholds still
differ per exit, each fitted on that exit's validation outputs). The search relies on the edge
exit rate being monotone in the knob: candidate knobs are the points where some validation
sample's decision flips (``critical_knob``), ordered by exit rate; exit-rate targets are met by
bisection over them, accuracy targets by a coarse scan then an exhaustive look between the best
feasible candidate and the next one.

Validation images are recreated from the checkpoint's recorded split (``meta["data"]``:
source, ``val_fraction``, ``split_seed``, ``limit``) and never come from the test split.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ddnn.checkpoint import Checkpoint
from ddnn.data import DatasetError, ImageArrays, load_split, train_val_split
from ddnn.data.provenance import repo_relative, training_source
from ddnn.engines.base import TORCH_FP32, EngineSpec
from ddnn.errors import PolicyError
from ddnn.evaluation import accuracy_metrics, exit_logits, route_samples
from ddnn.policies import (
    DropRule,
    EdgePolicy,
    EntropyCriterion,
    ExitCriterion,
    MaxSoftmaxCriterion,
    NormalizedEntropyCriterion,
    fit_ao_margin,
    softmax,
)
from ddnn.policies.ao_margin import DEFAULT_BANDWIDTH, DEFAULT_MIN_PAIR_SAMPLES

log = logging.getLogger(__name__)

# CLI method name -> criterion kind.
METHODS = {"ao": "ao_margin", "cdl": "max_softmax", "entropy": "entropy", "normalized-entropy": "normalized_entropy"}
TARGETS = ("accuracy", "exit_rate", "accuracy_loss")
_COARSE_POINTS = 400


@dataclass(frozen=True)
class Target:
    """What calibration aims for: ``accuracy`` (overall, at least), ``exit_rate`` (edge, at
    least) or ``accuracy_loss`` (at most this far below cloud-only accuracy); values are fractions."""

    kind: str
    value: float

    def __post_init__(self):
        if self.kind not in TARGETS:
            raise ValueError(f"target kind must be one of {TARGETS}, got {self.kind!r}")
        if not (isinstance(self.value, (int, float)) and 0.0 <= self.value <= 1.0):
            raise ValueError(f"target {self.kind} must be a fraction in [0, 1] (e.g. 0.9), got {self.value!r}")


@dataclass(frozen=True)
class Calibration:
    """The fitted policy and what it achieves on the validation split."""

    policy: EdgePolicy
    knob: float
    validation: dict


def fit_criterion(method: str, probs: np.ndarray, labels: np.ndarray, bandwidth: float = DEFAULT_BANDWIDTH,
                  min_pair_samples: int = DEFAULT_MIN_PAIR_SAMPLES, pairwise: bool = True) -> ExitCriterion:
    """A criterion of ``method`` for one exit; AO is fitted on ``probs``/``labels``, the others
    only need their knob, set later."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(METHODS)}")
    if method == "ao":
        return fit_ao_margin(probs, labels, bandwidth=bandwidth, min_pair_samples=min_pair_samples,
                             pairwise=pairwise)
    return {"cdl": MaxSoftmaxCriterion(0.5), "entropy": EntropyCriterion(0.5),
            "normalized-entropy": NormalizedEntropyCriterion(0.5)}[method]


def knob_bounds(criterion: ExitCriterion, num_classes: int) -> tuple[float, float | None]:
    """The knob's valid range (upper None: unbounded)."""
    return criterion.knob_bounds(num_classes)


def candidate_knobs(criteria: dict[str, ExitCriterion], logits: dict[str, np.ndarray]) -> np.ndarray:
    """Knob values between every pair of neighbouring decision flips of the validation samples,
    plus both ends of the range, ordered from fewest to most edge exits."""
    first = next(iter(criteria.values()))
    num_classes = next(iter(logits.values())).shape[1]
    low, high = knob_bounds(first, num_classes)
    flips = np.concatenate([c.critical_knob(softmax(logits[e])) for e, c in criteria.items()])
    flips = np.unique(flips[np.isfinite(flips)])
    flips = flips[(flips >= low) & ((flips <= high) if high is not None else True)]
    if high is None:
        high = 2.0 * float(flips.max()) + 1.0 if flips.size else 1.0
    knobs = np.unique(np.concatenate([[low, high], (flips[:-1] + flips[1:]) / 2, flips]))
    return knobs if first.knob_increases_exits else knobs[::-1]


def with_knob(criteria: dict[str, ExitCriterion], knob: float, drop: DropRule | None = None,
              meta: dict | None = None) -> EdgePolicy:
    """An EdgePolicy with every criterion set to ``knob``."""
    return EdgePolicy({e: c.with_knob(float(knob)) for e, c in criteria.items()}, drop, dict(meta or {}))


def cascade_metrics(policy: EdgePolicy, logits: dict[str, np.ndarray], labels: np.ndarray,
                    exits: Sequence[str]) -> dict:
    """The papers' accuracies and rates of ``policy`` over ``exits`` on precomputed logits."""
    outcomes = route_samples(policy, logits, exits)
    return accuracy_metrics(outcomes, labels, {e: logits[e] for e in (*exits, "final")})


class KnobCurve:
    """Metrics of one method along its candidate knobs (:func:`candidate_knobs`), evaluated
    lazily and memoized; index 0 has the fewest edge exits, the last index the most."""

    def __init__(self, criteria: dict[str, ExitCriterion], drop: DropRule | None, logits: dict[str, np.ndarray],
                 labels: np.ndarray, exits: Sequence[str]):
        self.criteria, self.drop, self.logits, self.labels = criteria, drop, logits, np.asarray(labels)
        self.exits = tuple(exits)
        self.knobs = candidate_knobs(criteria, logits)
        self._memo: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.knobs)

    def policy(self, i: int, meta: dict | None = None) -> EdgePolicy:
        return with_knob(self.criteria, self.knobs[i], self.drop, meta)

    def at(self, i: int) -> dict:
        """:func:`cascade_metrics` at candidate ``i``."""
        if i not in self._memo:
            self._memo[i] = cascade_metrics(self.policy(i), self.logits, self.labels, self.exits)
        return self._memo[i]

    def rate(self, i: int) -> float:
        return self.at(i)["edge_exit_rate"]

    def acc(self, i: int) -> float:
        return self.at(i)["acc_overall"]

    def index_for_exit_rate(self, goal: float) -> int:
        """Smallest candidate index whose edge exit rate is at least ``goal`` (bisection: the exit
        rate is monotone along the candidates)."""
        hi = len(self) - 1
        if self.rate(hi) < goal:
            raise PolicyError(f"edge exit rate {goal:.4f} is not reachable on the validation split: "
                              f"at most {self.rate(hi):.4f}")
        lo = 0
        if self.rate(lo) >= goal:
            return lo
        while hi - lo > 1:  # invariant: rate(lo) < goal <= rate(hi)
            mid = (lo + hi) // 2
            if self.rate(mid) >= goal:
                hi = mid
            else:
                lo = mid
        return hi

    def index_for_accuracy(self, goal: float) -> int:
        """Candidate index with the most edge exits whose overall accuracy is at least ``goal``."""
        n = len(self)
        coarse = np.unique(np.linspace(0, n - 1, min(n, _COARSE_POINTS)).round().astype(int))
        feasible = [int(i) for i in coarse if self.acc(i) >= goal]
        if not feasible:
            best = max(coarse, key=self.acc)
            raise PolicyError(f"overall accuracy {goal:.4f} is not reachable on the validation split: the best "
                              f"is {self.acc(best):.4f} (at edge exit rate {self.rate(best):.4f})")
        best = max(feasible)
        following = coarse[coarse > best]
        stop = int(following[0]) if following.size else n
        # Accuracy is not monotone in the knob, so look at every candidate up to the next coarse one.
        finer = [i for i in range(best + 1, stop) if self.acc(i) >= goal]
        return max([best, *finer], key=lambda i: (self.rate(i), self.acc(i)))


def calibrate(logits: dict[str, np.ndarray], labels: np.ndarray, method: str, exits: Sequence[str],
              target: Target, drop_threshold: float | None = None, bandwidth: float = DEFAULT_BANDWIDTH,
              min_pair_samples: int = DEFAULT_MIN_PAIR_SAMPLES, pairwise: bool = True) -> Calibration:
    """Fit a policy of ``method`` on validation ``logits`` (per exit, (N, C)) to ``target``.

    ``exits`` are the active edge exits in depth order. Raises PolicyError when the target
    cannot be met on these samples.
    """
    if not exits:
        raise ValueError("calibration needs at least one edge exit")
    labels = np.asarray(labels)
    criteria = {e: fit_criterion(method, softmax(logits[e]), labels, bandwidth, min_pair_samples, pairwise)
                for e in exits}
    drop = DropRule(drop_threshold) if drop_threshold is not None else None
    curve = KnobCurve(criteria, drop, logits, labels, exits)
    cloud_only = float((logits["final"].argmax(axis=1) == labels).mean())
    if target.kind == "exit_rate":
        best = curve.index_for_exit_rate(target.value)
    else:
        goal = target.value if target.kind == "accuracy" else cloud_only - target.value
        best = curve.index_for_accuracy(goal)
    knob = float(curve.knobs[best])
    m = curve.at(best)
    validation = {"samples": len(labels), "edge_exit_rate": m["edge_exit_rate"], "exit_rate": m["exit_rate"],
                  "acc_overall": m["acc_overall"], "acc_aux_allocate": m["acc_aux_allocate"],
                  "acc_prin_allocate": m["acc_prin_allocate"], "cloud_only_accuracy": cloud_only,
                  "accuracy_loss": cloud_only - m["acc_overall"]}
    meta = {"method": method, "criterion": METHODS[method], "exits": list(exits), "knob": knob,
            "target": {"kind": target.kind, "value": target.value}, "validation": validation}
    if method == "ao":
        meta["ao"] = {"bandwidth": bandwidth, "min_pair_samples": min_pair_samples, "pairwise": pairwise}
    return Calibration(curve.policy(best, meta), knob, validation)


def validation_split(checkpoint: Checkpoint, data: str | Path | None = None) -> ImageArrays:
    """The checkpoint's validation images, rebuilt exactly as training split them."""
    d = checkpoint.meta.get("data") or {}
    source = training_source(checkpoint, data)
    arrays = load_split(source, "train")
    idx_all = np.arange(len(arrays))
    limit = d.get("limit")
    seed = int(d.get("split_seed", 0))
    if limit:  # the same subsampling as ddnn.training.loop
        idx_all = np.sort(np.random.default_rng(seed).permutation(len(arrays))[:limit])
    _, val_rel = train_val_split(arrays.labels[idx_all], float(d.get("val_fraction", 0.1)), seed)
    val = idx_all[val_rel]
    expected = d.get("val_count")
    if expected is not None and expected != len(val):
        raise DatasetError(source, f"gives {len(val)} validation images but the checkpoint recorded {expected}: "
                           "pass --data pointing at the data the checkpoint was trained on")
    if not len(val):
        raise DatasetError(source, "the checkpoint's validation split is empty (trained with val_fraction 0)")
    return arrays.subset(val, split="val")


def calibrate_checkpoint(checkpoint: Checkpoint, method: str, target: Target, exits: Sequence[str] | None = None,
                         data: str | Path | None = None, drop_threshold: float | None = None,
                         bandwidth: float = DEFAULT_BANDWIDTH, min_pair_samples: int = DEFAULT_MIN_PAIR_SAMPLES,
                         pairwise: bool = True, command: str = "", progress: bool | None = None,
                         engine: EngineSpec | None = None) -> Calibration:
    """Calibrate on the checkpoint's validation split; ``exits`` default to its deepest edge exit.

    The logits are those of ``engine`` (default torch fp32): thresholds fitted to one engine's
    logits are what that engine should run with. The policy's ``meta`` records the method, target,
    achieved validation numbers, the exits, the checkpoint's path and sha256, the validation data
    and the engine.
    """
    engine = engine or TORCH_FP32
    edge = [e for e in checkpoint.exit_names if e != "final"]
    exits = list(exits) if exits else edge[-1:]
    unknown = [e for e in exits if e not in edge]
    if unknown or not exits:
        raise PolicyError(f"--exits {','.join(exits)}: not edge exits of the checkpoint; its edge exits: {edge}")
    exits = [e for e in edge if e in exits]  # depth order
    val = validation_split(checkpoint, data)
    logits = exit_logits(checkpoint, val, progress=progress, engine=engine)
    recorded = ((checkpoint.meta.get("metrics") or {}).get("val_accuracy") or {}).get("final")
    measured = float((logits["final"].argmax(axis=1) == val.labels).mean())
    if recorded is not None and abs(measured - recorded) > 0.01:
        log.warning("final-exit validation accuracy %.4f differs from the %.4f recorded at training: is %s the "
                    "data the checkpoint was trained on?", measured, recorded, val.source)
    result = calibrate(logits, val.labels, method, exits, target, drop_threshold, bandwidth, min_pair_samples,
                       pairwise)
    d = checkpoint.meta.get("data") or {}
    result.policy.meta.update({
        "checkpoint": repo_relative(checkpoint.path), "checkpoint_sha256": checkpoint.sha256,
        "validation_data": {"source": repo_relative(val.source), "val_fraction": d.get("val_fraction"),
                            "split_seed": d.get("split_seed"), "limit": d.get("limit"), "count": len(val)},
        "engine": engine.to_dict(), "command": command,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    return result
