"""Offline evaluation: cached per-exit logits, the edge cascade, and the papers' metrics."""

from ddnn.evaluation.costs import SplitCosts, aux_principal_costs, expected_costs, split_costs
from ddnn.evaluation.evaluate import describe_policy, evaluate, evaluate_logits
from ddnn.evaluation.logits import compute_logits, data_fingerprint, exit_logits, logits_cache_path
from ddnn.evaluation.report import EvalReport, accuracy_metrics, build_report
from ddnn.evaluation.routing import Outcomes, active_exits, route_samples

__all__ = [
    "EvalReport",
    "Outcomes",
    "SplitCosts",
    "accuracy_metrics",
    "active_exits",
    "aux_principal_costs",
    "build_report",
    "compute_logits",
    "data_fingerprint",
    "describe_policy",
    "evaluate",
    "evaluate_logits",
    "exit_logits",
    "expected_costs",
    "logits_cache_path",
    "route_samples",
    "split_costs",
]
