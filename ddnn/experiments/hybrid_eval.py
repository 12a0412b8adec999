"""``ddnn reproduce hybrid``: the numbers — test metrics and energy of every trained network, and
our energy model on the paper's own ResNet-32 (no training involved)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from ddnn.checkpoint import load_checkpoint
from ddnn.experiments.common import Context
from ddnn.experiments.hybrid_paper import ENTROPY_THRESHOLD, PAPER_TABLE3
from ddnn.experiments.hybrid_plan import BITS, HybridSetup

log = logging.getLogger(__name__)


def entropy_threshold(num_classes: int) -> float:
    """The paper's threshold for CIFAR-10 / CIFAR-100; other class counts scale CIFAR-10's by log C."""
    return ENTROPY_THRESHOLD.get(num_classes, 0.5 * math.log(num_classes) / math.log(10))


def describe(name: str) -> dict:
    """bits, split label and variant of a run name (``b1-10E8C-separate``, ``fp``, ``fp-12E6C``)."""
    parts = name.split("-")
    bits = None if parts[0] == "fp" else int(parts[0][1:])
    split = parts[1].replace("E", "E+") if len(parts) > 1 else None
    variant = parts[2] if len(parts) > 2 else ("fp" if bits is None else "joint")
    return {"bits": bits, "split": split, "variant": variant}


def evaluate_all(ctx: Context, runs: dict[str, Path]) -> dict:
    """Test metrics with the entropy-threshold exit, and the energy with and without early exit."""
    from ddnn.energy import EnergyTable, energy_per_inference
    from ddnn.evaluation import exit_logits
    from ddnn.experiments.measure import cascade
    from ddnn.policies import EntropyCriterion

    table = EnergyTable.load(ctx.energy_table)
    test = ctx.test_arrays()
    fp = load_checkpoint(runs["fp"]).model
    threshold = entropy_threshold(test.num_classes)
    rows = []
    for name, path in runs.items():
        ck = load_checkpoint(path)
        logits = exit_logits(ck, test, progress=False)
        exits = list(ck.exit_names[:-1])
        row = {"name": name, **describe(name), "exits": exits,
               "final_acc": float((logits["final"].argmax(1) == test.labels).mean()),
               "train_seconds": ck.meta.get("train_seconds")}
        for mem in (False, True):
            key = "_mem" if mem else ""
            cloud_only = energy_per_inference(ck.model, {}, table, edge_exits=[], memory=mem, reference=fp)
            row[f"noexit_uj{key}"] = cloud_only.total_pj * 1e-6
            row[f"noexit_x{key}"] = cloud_only.reduction
            row[f"reference_uj{key}"] = cloud_only.reference_pj * 1e-6
        if exits:
            m = cascade(logits, test.labels, exits, EntropyCriterion(threshold))
            rates = {e: m["exit_rate"][e] for e in exits}
            row.update({"exit_rates": rates, "edge_rate": m["edge_exit_rate"], "overall_acc": m["acc_overall"],
                        "edge_acc": m["acc_aux_allocate"], "cloud_acc": m["acc_prin_allocate"],
                        "exit_separate": {e: m["acc_separate"][e] for e in exits}})
            for mem in (False, True):
                key = "_mem" if mem else ""
                est = energy_per_inference(ck.model, rates, table, edge_exits=exits, memory=mem, reference=fp)
                row.update({f"edge_uj{key}": est.edge_pj * 1e-6, f"cloud_uj{key}": est.cloud_pj * 1e-6,
                            f"total_uj{key}": est.total_pj * 1e-6, f"x{key}": est.reduction,
                            f"edge_part_uj{key}": sum(e for _, e in est.segment_pj) * 1e-6,
                            f"cloud_part_uj{key}": est.cloud_part_pj * 1e-6})
        rows.append(row)
        log.info("evaluated %s", name)
    return {"rows": rows, "threshold": threshold, "n_test": len(test), "num_classes": test.num_classes,
            "table": table, "fp_acc": next(r["final_acc"] for r in rows if r["name"] == "fp")}


def find(results: dict, bits, split, variant) -> dict | None:
    return next((r for r in results["rows"] if r["bits"] == bits and r["split"] == split and r["variant"] == variant),
                None)


def find_reference(results: dict) -> dict:
    """The full-precision cloud-only run every hybrid experiment has (KeyError if the results lack it)."""
    row = find(results, None, None, "fp")
    if row is None:
        raise KeyError("the hybrid results have no full-precision reference run (variant 'fp')")
    return row


def best_per_bits(results: dict, setup: HybridSetup, tolerance: float = 0.02) -> list[dict]:
    """Per bit-width: the largest energy reduction, overall and within ``tolerance`` of the FP accuracy."""
    out = []
    for bits in BITS:
        cands = [r for r in (find(results, bits, s, "joint") for s in setup.splits) if r]
        if not cands:
            continue
        best = max(cands, key=lambda r: r["x"])
        close = [r for r in cands if r["overall_acc"] >= results["fp_acc"] - tolerance]
        out.append({"bits": bits, "best": best, "best_close": max(close, key=lambda r: r["x"]) if close else None})
    return out


def energy_model_rows(energy_table: str | None) -> list[dict]:
    """Our energy model on the paper's ResNet-32 splits (100-class exits) beside Table III, in mJ per
    10,000 images.

    Independent of training: the edge energy of a split does not depend on exit rates; the cloud
    energy at 0% exits bounds the paper's cloud column, and 1 - paper/ours is the exit rate the
    paper's cloud number implies.
    """
    from ddnn.energy import EnergyTable, split_ops
    from ddnn.models import build_model
    from ddnn.models.hybrid import parse_hybrid

    table = EnergyTable.load(energy_table)
    rows = []
    for label, per_bits in PAPER_TABLE3.items():
        for bits, (p_edge, p_cloud) in per_bits.items():
            ops = split_ops(build_model(parse_hybrid(label).spec(bits, 32, num_classes=100)))
            seg = ops.segments[0][1]
            edge, edge_m = seg.compute_pj(table) * 1e-5, seg.energy_pj(table, True) * 1e-5  # mJ per 10k images
            cloud, cloud_m = ops.cloud.compute_pj(table) * 1e-5, ops.cloud.energy_pj(table, True) * 1e-5
            rows.append({"split": label, "bits": bits, "paper_edge": p_edge, "paper_cloud": p_cloud, "edge": edge,
                         "edge_mem": edge_m, "cloud": cloud, "cloud_mem": cloud_m,
                         "implied": 1 - p_cloud / cloud, "implied_mem": 1 - p_cloud / cloud_m})
    return rows
