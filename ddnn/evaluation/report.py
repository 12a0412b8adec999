"""The papers' metrics for one policy on one dataset, as an :class:`EvalReport`.

Names follow the papers: Lo et al. (``000``) acc_aux/prin × separate/allocate and overall
accuracy (Eq. 8); Cheng et al. (``002``) Local, Server and Ideal accuracy and exit rates.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ddnn.evaluation.costs import SplitCosts, expected_costs
from ddnn.evaluation.routing import Outcomes
from ddnn.outcome import Outcome


def _mean(mask: np.ndarray) -> float | None:
    return float(mask.mean()) if mask.size else None


def accuracy_metrics(outcomes: Outcomes, labels: np.ndarray, logits: dict[str, np.ndarray]) -> dict:
    """Every accuracy and rate of the papers for one cascade outcome.

    * ``exit_rate``: share of samples answered at each edge exit, by the cloud, or dropped.
    * ``acc_allocate``: accuracy on the samples each route point answered.
    * ``acc_aux_allocate`` / ``acc_prin_allocate``: accuracy of the edge on the samples it
      answered / of the cloud on the samples offloaded to it (``002``'s Server accuracy).
    * ``acc_overall``: Eq. 8, n·acc_aux_allocate + (1−n)·acc_prin_allocate, dropped = wrong.
    * ``acc_answered``: accuracy over the samples that were not dropped.
    * ``local_accuracy`` (``002``): accuracy over all samples when the edge answers everything:
      the exit that accepts, else the last edge exit. With one edge exit this is that exit's
      separate accuracy and does not depend on the threshold, as in ``002`` Table III.
    * ``ideal_accuracy`` (``002``): share of samples that some active exit (edge or final)
      classifies correctly: what a perfect exit criterion would reach.
    * ``acc_separate``: each exit's accuracy on the whole set; ``acc_aux_separate`` is that of
      the deepest active edge exit, ``acc_prin_separate`` that of ``final``.
    """
    labels = np.asarray(labels)
    n = len(labels)
    correct = outcomes.prediction == labels
    idx = outcomes.exit_index
    n_edge = len(outcomes.edge_exits)
    edge = (idx >= 0) & (idx < n_edge)
    cloud = idx == n_edge
    dropped = idx < 0
    exit_rate = {name: float(np.mean(idx == k)) if n else 0.0 for k, name in enumerate(outcomes.route)}
    exit_rate[Outcome.DROPPED.label] = float(dropped.mean()) if n else 0.0
    acc_allocate = {name: _mean(correct[idx == k]) for k, name in enumerate(outcomes.route)}
    separate = {name: float((v.argmax(axis=1) == labels).mean()) if n else None for name, v in logits.items()}
    metrics = {
        "n_samples": n,
        "exit_rate": exit_rate,
        "edge_exit_rate": float(edge.mean()) if n else 0.0,
        "acc_overall": float(correct.mean()) if n else None,
        "acc_answered": _mean(correct[~dropped]),
        "acc_aux_allocate": _mean(correct[edge]),
        "acc_prin_allocate": _mean(correct[cloud]),
        "acc_allocate": acc_allocate,
        "local_accuracy": None,
        "ideal_accuracy": None,
        "acc_separate": separate,
        "acc_aux_separate": separate[outcomes.edge_exits[-1]] if n_edge else None,
        "acc_prin_separate": separate["final"],
    }
    hits = [logits[e].argmax(axis=1) == labels for e in (*outcomes.edge_exits, "final")]
    metrics["ideal_accuracy"] = float(np.logical_or.reduce(hits).mean()) if n else None
    if n_edge:
        forced = np.where(edge, outcomes.prediction, logits[outcomes.edge_exits[-1]].argmax(axis=1))
        metrics["local_accuracy"] = float((forced == labels).mean()) if n else None
    return metrics


@dataclass
class EvalReport:
    """Metrics of a policy on a dataset plus the per-sample outcomes behind them.

    ``metrics`` holds the accuracies and rates (see :func:`accuracy_metrics`), ``costs`` the
    expected MACs and link bytes, ``info`` where the numbers come from (checkpoint, data,
    policy). ``outcomes`` and ``labels`` are per sample, for comparison with a live system.
    """

    metrics: dict
    costs: dict
    outcomes: Outcomes
    labels: np.ndarray
    info: dict = field(default_factory=dict)

    @property
    def exit_taken(self) -> np.ndarray:
        return self.outcomes.exit_taken

    @property
    def prediction(self) -> np.ndarray:
        return self.outcomes.prediction

    @property
    def confidence(self) -> np.ndarray:
        return self.outcomes.confidence

    def to_dict(self) -> dict:
        """JSON-ready summary (no per-sample arrays)."""
        return {**self.info, "exits": list(self.outcomes.edge_exits), **self.metrics, **self.costs}

    def write_per_sample_csv(self, path: str | Path) -> Path:
        """One row per sample: sample_id, label, exit, prediction, confidence."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["sample_id", "label", "exit", "prediction", "confidence"])
            for i, (y, e, p, c) in enumerate(zip(self.labels.tolist(), self.exit_taken.tolist(),
                                                 self.prediction.tolist(), self.confidence.tolist(), strict=True)):
                w.writerow([i, y, e, p, f"{c:.6f}"])
        return path

    def format(self) -> str:
        """A human-readable report: per-exit table, then the system metrics."""
        m, c = self.metrics, self.costs
        lines = [f"{k}: {v}" for k, v in self.info.items() if isinstance(v, (str, int, float)) and k != "policy"]
        if self.info.get("policy"):
            lines.append(f"policy: {self.info['policy']}")
        lines.append(f"edge exits: {', '.join(self.outcomes.edge_exits) or 'none (cloud only)'}")
        lines += ["", f"{'exit':<16}{'acc_separate':>14}{'exit rate':>12}{'acc_allocate':>14}"]
        route = dict(zip(self.outcomes.edge_exits, self.outcomes.edge_exits, strict=True))
        route["final"] = Outcome.CLOUD.label
        for name, acc in m["acc_separate"].items():
            point = route.get(name)
            rate = _pct(m["exit_rate"][point]) if point else "-"
            alloc = _pct(m["acc_allocate"][point]) if point else "-"
            label = f"{name} (cloud)" if name == "final" else name
            lines.append(f"{label:<16}{_pct(acc):>14}{rate:>12}{alloc:>14}")
        dropped = Outcome.DROPPED.label
        lines.append(f"{dropped:<16}{'':>14}{_pct(m['exit_rate'][dropped]):>12}")
        lines += [
            "",
            f"  edge exit rate (n in Eq. 8)              {_pct(m['edge_exit_rate'])}",
            f"  acc_aux_allocate (edge, on exited)       {_pct(m['acc_aux_allocate'])}",
            f"  acc_prin_allocate (cloud, on offloaded)  {_pct(m['acc_prin_allocate'])}",
            f"  overall accuracy (Eq. 8, dropped=wrong)  {_pct(m['acc_overall'])}",
            f"  accuracy on answered samples             {_pct(m['acc_answered'])}",
            f"  local accuracy (002)                     {_pct(m['local_accuracy'])}",
            f"  ideal accuracy (002)                     {_pct(m['ideal_accuracy'])}",
            "",
            f"  MACs full model                          {c['macs']['full_model'] / 1e6:.2f} M",
            f"  edge MACs, expected / full               {c['macs']['edge_expected_norm']:.3f}",
            f"  cloud MACs, expected / full              {c['macs']['cloud_expected_norm']:.3f}",
        ]
        lb = c["link_bytes"]
        per = ", ".join(f"{k} {v:,.0f}" for k, v in lb["expected_per_sample"].items())
        shape = "x".join(map(str, lb["feature_shape"]))
        lines += [f"  link bytes/sample, expected              {per} ({lb['payload']} {shape} per offload)",
                  f"  link bytes/sample, raw input offload     uint8 {lb['raw_offload_expected_per_sample']:,.0f} "
                  f"(cloud only: {lb['cloud_only_per_sample']:,})"]
        if "energy" in c:
            e, em = c["energy"]["compute"], c["energy"]["with_memory"]
            lines += [f"  energy/inference ({c['energy']['table']})",
                      f"    compute: edge {e['edge_uj']:.2f} µJ + expected cloud {e['cloud_uj']:.2f} µJ = "
                      f"{e['total_uj']:.2f} µJ ({e['reduction']:.2f}x less than cloud-only {e['reference_uj']:.2f} µJ)",
                      f"    with memory accesses: {em['total_uj']:.2f} µJ ({em['reduction']:.2f}x less than "
                      f"{em['reference_uj']:.2f} µJ)"]
        return "\n".join(lines)


def build_report(outcomes: Outcomes, labels: np.ndarray, logits: dict[str, np.ndarray], costs: SplitCosts,
                 info: dict | None = None) -> EvalReport:
    """Assemble an :class:`EvalReport` from a cascade's outcomes."""
    return EvalReport(accuracy_metrics(outcomes, labels, logits), expected_costs(costs, outcomes.exit_index),
                      outcomes, np.asarray(labels), dict(info or {}))


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"
