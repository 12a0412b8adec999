"""The exit-policy contract shared by the offline evaluator and the edge service.

An :class:`ExitCriterion` judges one exit's softmax outputs: which samples may leave there, and
the confidence score reported with each answer. An :class:`EdgePolicy` holds one criterion per
edge exit plus an optional drop rule, and turns a batch of logits at an exit into per-sample
decisions. Everything is vectorized over the batch and computed in float64 from the float32
logits, so the same logits always give the same decisions, in a notebook or in a service.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import ClassVar

import numpy as np

from ddnn.errors import PolicyError
from ddnn.policies.scores import normalized_entropy, softmax

POLICY_FORMAT = "ddnn.policy/v1"


class Decision(IntEnum):
    """What happens to a sample at an exit."""

    EXIT = 0  # answered here
    CONTINUE = 1  # not confident: go deeper (next edge exit, or offload to the cloud after the last)
    DROP = 2  # hopeless even for the cloud (Lee et al.'s drop threshold): answered "dropped"


class ExitCriterion(ABC):
    """A rule deciding, from softmax outputs, which samples are confident enough to exit.

    Subclasses register under ``kind`` and have one scalar ``knob`` (the user-facing threshold)
    that runtime control and calibration move; ``knob_increases_exits`` says its direction.
    """

    kind: ClassVar[str]
    knob_increases_exits: ClassVar[bool]
    registry: ClassVar[dict[str, type[ExitCriterion]]] = {}

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if getattr(cls, "kind", None):
            ExitCriterion.registry[cls.kind] = cls

    @property
    @abstractmethod
    def knob(self) -> float:
        """The scalar that trades exit rate for accuracy."""

    @abstractmethod
    def with_knob(self, value: float) -> ExitCriterion:
        """A copy with ``knob`` set to ``value`` (validated)."""

    @abstractmethod
    def confidence(self, probs: np.ndarray) -> np.ndarray:
        """Per-sample confidence score reported with an answer, shape (N,)."""

    @abstractmethod
    def accept(self, probs: np.ndarray) -> np.ndarray:
        """Boolean mask, shape (N,): True where the sample may exit here."""

    @abstractmethod
    def critical_knob(self, probs: np.ndarray) -> np.ndarray:
        """Per sample, shape (N,), the knob value at which its decision flips.

        Calibration orders its candidate knobs by these points and the SLO controller reads the
        knob for an offload fraction off them as a quantile, so they must agree with ``accept``:
        when ``knob_increases_exits`` a sample exits iff the knob is above its value, else iff it
        is below (the boundary itself follows ``accept``'s comparison).
        """

    @abstractmethod
    def knob_bounds(self, num_classes: int) -> tuple[float, float | None]:
        """The knob's valid range for outputs over ``num_classes`` classes (upper None: unbounded);
        calibration searches within it."""

    @abstractmethod
    def to_dict(self) -> dict:
        """JSON-ready parameters, including ``kind``."""

    @staticmethod
    def from_dict(d: dict) -> ExitCriterion:
        kind = d.get("kind") if isinstance(d, dict) else None
        if kind not in ExitCriterion.registry:
            raise PolicyError(f"unknown criterion kind {kind!r}; known: {sorted(ExitCriterion.registry)}")
        return ExitCriterion.registry[kind]._from_dict(d)

    @classmethod
    @abstractmethod
    def _from_dict(cls, d: dict) -> ExitCriterion: ...


@dataclass(frozen=True)
class DropRule:
    """Drop a sample whose normalized entropy at the last edge exit exceeds ``threshold``."""

    threshold: float

    def __post_init__(self):
        if not 0.0 < self.threshold <= 1.0:
            raise PolicyError(f"drop threshold must be in (0, 1], got {self.threshold}")

    def hopeless(self, probs: np.ndarray) -> np.ndarray:
        return normalized_entropy(probs) > self.threshold

    def to_dict(self) -> dict:
        return {"kind": "normalized_entropy", "threshold": self.threshold}


@dataclass(frozen=True)
class ExitBatch:
    """Decisions at one exit for a batch: ``decision`` (Decision values, int8), ``prediction``
    (argmax class) and ``confidence`` (the criterion's score), each shape (N,)."""

    decision: np.ndarray
    prediction: np.ndarray
    confidence: np.ndarray


@dataclass
class EdgePolicy:
    """Per-exit criteria for the edge exits, and an optional drop rule at the last one.

    ``meta`` records how the policy was made (method, target, checkpoint hash, split).
    """

    criteria: dict[str, ExitCriterion]
    drop: DropRule | None = None
    meta: dict = field(default_factory=dict)

    def criterion(self, exit: str) -> ExitCriterion:
        try:
            return self.criteria[exit]
        except KeyError:
            raise PolicyError(f"policy has no criterion for exit {exit!r}; it covers {sorted(self.criteria)}") from None

    def decide(self, exit: str, logits: np.ndarray, last: bool) -> ExitBatch:
        """Decide every sample of a batch of ``logits`` (N, C) at ``exit``.

        Samples the criterion accepts EXIT; at the ``last`` edge exit, samples the drop rule
        finds hopeless DROP; everything else CONTINUEs (deeper, or to the cloud).
        """
        probs = softmax(logits)
        crit = self.criterion(exit)
        accept = crit.accept(probs)
        decision = np.where(accept, Decision.EXIT, Decision.CONTINUE).astype(np.int8)
        if last and self.drop is not None:
            decision[~accept & self.drop.hopeless(probs)] = Decision.DROP
        return ExitBatch(decision, probs.argmax(axis=1), crit.confidence(probs))

    def with_knobs(self, knobs: dict[str, float]) -> EdgePolicy:
        """A copy with some exits' knobs replaced (runtime control)."""
        unknown = set(knobs) - set(self.criteria)
        if unknown:
            raise PolicyError(f"no criterion for exits {sorted(unknown)}; policy covers {sorted(self.criteria)}")
        crit = {e: (c.with_knob(knobs[e]) if e in knobs else c) for e, c in self.criteria.items()}
        return EdgePolicy(crit, self.drop, dict(self.meta))

    def to_dict(self) -> dict:
        return {"format": POLICY_FORMAT, "exits": {e: c.to_dict() for e, c in self.criteria.items()},
                "drop": self.drop.to_dict() if self.drop else None, "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict, source: str = "policy") -> EdgePolicy:
        if not isinstance(d, dict) or d.get("format") != POLICY_FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise PolicyError(f"{source}: format {got!r}, expected {POLICY_FORMAT!r}")
        exits = d.get("exits")
        if not isinstance(exits, dict) or not exits:
            raise PolicyError(f"{source}: field 'exits' must map exit names to criteria")
        criteria = {}
        for name, c in exits.items():
            try:
                criteria[name] = ExitCriterion.from_dict(c)
            except PolicyError as exc:
                raise PolicyError(f"{source}: exits.{name}: {exc}") from None
        drop = d.get("drop")
        if drop is not None:
            if not isinstance(drop, dict) or drop.get("kind") != "normalized_entropy" or "threshold" not in drop:
                raise PolicyError(f"{source}: field 'drop' must be null or "
                                  "{'kind': 'normalized_entropy', 'threshold': T}")
            try:
                drop = DropRule(float(drop["threshold"]))
            except (TypeError, ValueError) as exc:
                raise PolicyError(f"{source}: drop: {exc}") from None
        return cls(criteria, drop, dict(d.get("meta") or {}))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> EdgePolicy:
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise PolicyError(f"{path}: no such policy file") from None
        except json.JSONDecodeError as exc:
            raise PolicyError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(doc, source=str(path))
