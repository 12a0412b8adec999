"""The edge cascade applied offline: which exit answers each sample, with what and how surely.

Semantics (the same as the edge service, through :meth:`EdgePolicy.decide`): a sample takes the
first active edge exit whose criterion accepts it; a sample no edge exit accepts is DROPped if
the policy's drop rule finds it hopeless at the last edge exit, else offloaded to the cloud,
which answers with the ``final`` exit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ddnn.errors import PolicyError
from ddnn.outcome import Outcome
from ddnn.policies import Decision, EdgePolicy, softmax

DROPPED_INDEX = -1  # exit_index of a dropped sample


@dataclass(frozen=True)
class Outcomes:
    """Per-sample results of a cascade, each array of shape (N,).

    Attributes:
        route: the answering points in order: the active edge exits, then ``"cloud"`` (``Outcome.CLOUD.label``).
        exit_index: index into ``route`` of the point that answered; -1 = dropped.
        prediction: predicted class; -1 for dropped samples (no answer).
        confidence: the exit criterion's confidence at the edge exit that answered (or, for a
            dropped sample, at the last edge exit); for cloud answers the final exit's max softmax.
    """

    route: tuple[str, ...]
    exit_index: np.ndarray
    prediction: np.ndarray
    confidence: np.ndarray

    @property
    def exit_taken(self) -> np.ndarray:
        """Name of the answering point per sample: an edge exit, ``"cloud"`` or ``"dropped"`` (outcome labels)."""
        names = np.array([*self.route, Outcome.DROPPED.label])
        return names[self.exit_index]  # index -1 picks "dropped"

    @property
    def edge_exits(self) -> tuple[str, ...]:
        return self.route[:-1]

    def __len__(self) -> int:
        return int(self.exit_index.shape[0])


def active_exits(policy: EdgePolicy | None, exits: Sequence[str] | None, exit_names: Sequence[str]) -> tuple[str, ...]:
    """The edge exits a run uses, in depth order, checked against the model and the policy.

    ``exits`` None means every exit the policy covers (none without a policy: cloud only).
    """
    edge = [e for e in exit_names if e != "final"]
    chosen = list(exits) if exits is not None else (list(policy.criteria) if policy else [])
    unknown = [e for e in chosen if e not in edge]
    if unknown:
        raise PolicyError(f"exits {unknown} are not edge exits of the model; its edge exits: {edge}")
    if chosen and policy is None:
        raise PolicyError(f"edge exits {chosen} need a policy")
    if policy is not None:
        missing = [e for e in chosen if e not in policy.criteria]
        if missing:
            raise PolicyError(f"policy has no criterion for exits {missing}; it covers {sorted(policy.criteria)}")
    return tuple(e for e in edge if e in chosen)


def route_samples(policy: EdgePolicy | None, logits: dict[str, np.ndarray], exits: Sequence[str]) -> Outcomes:
    """Run the cascade over per-exit ``logits`` (each (N, C)); ``exits`` in depth order."""
    final = logits["final"]
    n = final.shape[0]
    exits = tuple(exits)
    if exits and policy is None:
        raise PolicyError(f"edge exits {list(exits)} need a policy")
    exit_index = np.full(n, len(exits), dtype=np.int16)
    prediction = np.full(n, -1, dtype=np.int64)
    confidence = np.zeros(n, dtype=np.float64)
    pending = np.arange(n)
    for k, name in enumerate(exits):
        assert policy is not None  # (checked above)
        batch = policy.decide(name, logits[name][pending], last=k == len(exits) - 1)
        done = batch.decision != Decision.CONTINUE
        rows = pending[done]
        exited = batch.decision[done] == Decision.EXIT
        exit_index[rows] = np.where(exited, k, DROPPED_INDEX)
        prediction[rows] = np.where(exited, batch.prediction[done], -1)
        confidence[rows] = batch.confidence[done]
        pending = pending[~done]
    probs = softmax(final[pending])
    prediction[pending] = probs.argmax(axis=1)
    confidence[pending] = probs.max(axis=1)
    return Outcomes((*exits, Outcome.CLOUD.label), exit_index, prediction, confidence)
