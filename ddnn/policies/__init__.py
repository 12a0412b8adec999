"""Exit policies: CDL (max softmax), BranchyNet (entropy), normalized entropy, AO (KDE margins).

Importing this package registers every criterion kind, so ``EdgePolicy.load`` can read them.
"""

from ddnn.policies.ao_margin import AoMarginCriterion, fit_ao_margin, top2
from ddnn.policies.base import Decision, DropRule, EdgePolicy, ExitBatch, ExitCriterion, softmax
from ddnn.policies.entropy import EntropyCriterion, NormalizedEntropyCriterion, entropy, normalized_entropy
from ddnn.policies.max_softmax import MaxSoftmaxCriterion

__all__ = [
    "AoMarginCriterion",
    "Decision",
    "DropRule",
    "EdgePolicy",
    "EntropyCriterion",
    "ExitBatch",
    "ExitCriterion",
    "MaxSoftmaxCriterion",
    "NormalizedEntropyCriterion",
    "entropy",
    "fit_ao_margin",
    "normalized_entropy",
    "softmax",
    "top2",
]
