"""``evaluate``: a checkpoint, a dataset and a policy in, the papers' metrics out."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ddnn.checkpoint import Checkpoint, load_checkpoint
from ddnn.data import ImageArrays
from ddnn.energy import EnergyTable
from ddnn.engines.base import TORCH_FP32, EngineSpec, policy_engine
from ddnn.evaluation.costs import split_costs
from ddnn.evaluation.logits import exit_logits
from ddnn.evaluation.report import EvalReport, build_report
from ddnn.evaluation.routing import active_exits, route_samples
from ddnn.models import MultiExitNet
from ddnn.policies import EdgePolicy

log = logging.getLogger(__name__)


def describe_policy(policy: EdgePolicy | None, exits: Sequence[str]) -> str:
    """One line: each active exit's criterion kind and knob, and the drop rule."""
    if policy is None or not exits:
        return "none (cloud only)"
    parts = [f"{e}: {policy.criteria[e].kind} knob={policy.criteria[e].knob:.6g}" for e in exits]
    parts.append(f"drop: normalized entropy > {policy.drop.threshold:g}" if policy.drop else "drop: off")
    return "; ".join(parts)


def evaluate_logits(logits: dict[str, np.ndarray], labels: np.ndarray, policy: EdgePolicy | None,
                    model: MultiExitNet, exits: Sequence[str] | None = None, info: dict | None = None,
                    energy_table: EnergyTable | None = None) -> EvalReport:
    """Evaluate ``policy`` on precomputed per-exit ``logits``; ``model`` supplies the split costs.

    ``exits`` picks the active edge exits (default: every exit the policy covers);
    ``energy_table`` the per-operation energies (default: Long et al.'s Table I).
    """
    chosen = active_exits(policy, exits, model.exit_names)
    outcomes = route_samples(policy, logits, chosen)
    info = {**(info or {}), "policy": describe_policy(policy, chosen)}
    costs = dataclasses.replace(split_costs(model, chosen), energy_table=energy_table)
    return build_report(outcomes, labels, logits, costs, info)


def evaluate(checkpoint: Checkpoint | str | Path, arrays: ImageArrays, policy: EdgePolicy | str | Path | None = None,
             exits: Sequence[str] | None = None, use_cache: bool = True, progress: bool | None = None,
             energy_table: EnergyTable | None = None, engine: EngineSpec | None = None) -> EvalReport:
    """Run ``checkpoint`` over ``arrays`` on ``engine`` (default torch fp32; logits cached) and
    evaluate ``policy`` on it.

    ``checkpoint`` and ``policy`` may be loaded objects or paths; ``policy`` None evaluates
    cloud-only inference. The report's ``outcomes`` give the per-sample exit, prediction and
    confidence.
    """
    ck = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    policy_path = None
    if policy is not None and not isinstance(policy, EdgePolicy):
        policy_path, policy = str(policy), EdgePolicy.load(policy)
    if arrays.num_classes != ck.spec.num_classes:
        raise ValueError(f"{arrays.source}: {arrays.num_classes} classes, but the checkpoint {ck.path} "
                         f"predicts {ck.spec.num_classes}")
    engine = engine or TORCH_FP32
    info = {"checkpoint": ck.path, "checkpoint_sha256": ck.sha256, "data": arrays.source, "split": arrays.split,
            "images": len(arrays), "engine": engine.name}
    if policy_path:
        info["policy_file"] = policy_path
    if policy is not None:
        fitted_for = policy.meta.get("checkpoint_sha256")
        if fitted_for and fitted_for != ck.sha256:
            log.warning("policy was calibrated for checkpoint %s…, not %s…", fitted_for[:12], ck.sha256[:12])
            info["policy_checkpoint_mismatch"] = True
        fitted_engine = policy_engine(policy.meta)
        if fitted_engine.precision != engine.precision:
            log.warning("policy was calibrated for engine %s, evaluated on %s: its thresholds assume the other "
                        "engine's logits", fitted_engine.name, engine.name)
            info["policy_engine_mismatch"] = fitted_engine.name
    active_exits(policy, exits, ck.exit_names)  # fail before the forward pass, naming the exit
    logits = exit_logits(ck, arrays, use_cache=use_cache, progress=progress, engine=engine)
    return evaluate_logits(logits, arrays.labels, policy, ck.model, exits, info, energy_table)
