"""Exit policies: CDL (max softmax), BranchyNet (entropy), normalized entropy, AO (KDE margins)."""

from ddnn.policies.base import Decision, DropRule, EdgePolicy, ExitBatch, ExitCriterion, softmax
from ddnn.policies.entropy import entropy, normalized_entropy

__all__ = [
    "Decision",
    "DropRule",
    "EdgePolicy",
    "ExitBatch",
    "ExitCriterion",
    "entropy",
    "normalized_entropy",
    "softmax",
]
