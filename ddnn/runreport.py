"""Per-sample records of a run (distributed or in-process) and the report built from them.

Accuracy names follow the papers: edge accuracy (on samples answered at the edge, Lee et al.),
cloud accuracy (on samples answered by the cloud), overall accuracy (all samples, dropped and
rejected count as wrong), local accuracy (the edge's answer over all samples) and ideal
accuracy (correct at the local or the server exit, Cheng et al.).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ddnn.outcome import Outcome

OUTCOME_LABELS = {o.value: o.label for o in Outcome}  # the outcome column; "none" for a sample never answered
COLUMNS = ("sample_id", "label", "outcome", "exit", "prediction", "edge_prediction", "confidence", "sent_s",
           "latency_s", "edge_compute_s", "link_s", "cloud_compute_s", "server_total_s", "offload_bytes", "answers",
           "error")


@dataclass
class Records:
    """Column arrays, one row per sample, indexed by position ``0..n-1``."""

    n: int
    sample_id: np.ndarray = field(init=False)
    label: np.ndarray = field(init=False)
    outcome: np.ndarray = field(init=False)
    exit: list[str] = field(init=False)
    prediction: np.ndarray = field(init=False)
    edge_prediction: np.ndarray = field(init=False)
    confidence: np.ndarray = field(init=False)
    sent_s: np.ndarray = field(init=False)  # when its batch was sent, seconds from the start of the run
    latency_s: np.ndarray = field(init=False)
    edge_compute_s: np.ndarray = field(init=False)
    link_s: np.ndarray = field(init=False)
    cloud_compute_s: np.ndarray = field(init=False)
    server_total_s: np.ndarray = field(init=False)
    offload_bytes: np.ndarray = field(init=False)
    error: list[str] = field(init=False)
    answers: np.ndarray = field(init=False)  # how many answers each sample got (must be 1)

    def __post_init__(self):
        n = self.n
        self.sample_id = np.arange(n, dtype=np.int64)
        self.label = np.full(n, -1, np.int64)
        self.outcome = np.zeros(n, np.int8)
        self.exit = [""] * n
        self.prediction = np.full(n, -1, np.int64)
        self.edge_prediction = np.full(n, -1, np.int64)
        self.confidence = np.zeros(n, np.float32)
        for name in ("sent_s", "latency_s", "edge_compute_s", "link_s", "cloud_compute_s", "server_total_s"):
            setattr(self, name, np.full(n, np.nan))
        self.offload_bytes = np.zeros(n, np.int64)
        self.error = [""] * n
        self.answers = np.zeros(n, np.int32)

    def write_csv(self, path: str | Path) -> None:
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(COLUMNS)
            for i in range(self.n):
                outcome = OUTCOME_LABELS.get(int(self.outcome[i]), "none")
                w.writerow([int(self.sample_id[i]), int(self.label[i]), outcome, self.exit[i],
                            int(self.prediction[i]), int(self.edge_prediction[i]),
                            f"{self.confidence[i]:.6f}", f"{self.sent_s[i]:.6f}", f"{self.latency_s[i]:.6f}",
                            f"{self.edge_compute_s[i]:.6f}", f"{self.link_s[i]:.6f}", f"{self.cloud_compute_s[i]:.6f}",
                            f"{self.server_total_s[i]:.6f}", int(self.offload_bytes[i]), int(self.answers[i]),
                            self.error[i]])


def _pct(x: np.ndarray) -> dict:
    x = x[np.isfinite(x)]
    if not len(x):
        return {"count": 0}
    return {"count": len(x), "mean": float(x.mean()), "p50": float(np.percentile(x, 50)),
            "p95": float(np.percentile(x, 95)), "p99": float(np.percentile(x, 99)), "max": float(x.max())}


def _acc(correct: np.ndarray, mask: np.ndarray) -> float | None:
    return float(correct[mask].mean()) if mask.any() else None


def build_report(r: Records, wall_s: float, config: dict | None = None) -> dict:
    """Exit rates, accuracies, latency percentiles per path, time decomposition, bytes, throughput."""
    n = r.n
    correct = (r.prediction == r.label) & (r.prediction >= 0)
    masks = {o: r.outcome == o for o in Outcome}  # in the enum's order, which is the report's
    edge, cloud, dropped, degraded, rejected = masks.values()
    local_correct = (r.edge_prediction == r.label) & (r.edge_prediction >= 0)
    exit_names = np.asarray(r.exit, dtype=object)
    exits = sorted(set(exit_names[edge]))
    rates = {e: float((edge & (exit_names == e)).mean()) for e in exits}
    rates.update({o.label: float(masks[o].mean()) for o in Outcome if o != Outcome.EDGE})
    paths = {o.label: masks[o] for o in Outcome if o != Outcome.REJECTED}
    answered_once = int((r.answers == 1).sum())
    return {
        "samples": n,
        "integrity": {"answered_exactly_once": answered_once, "missing": int((r.answers == 0).sum()),
                      "duplicated": int((r.answers > 1).sum()), Outcome.REJECTED.label: int(rejected.sum()),
                      "ok": answered_once == n and not rejected.any()},
        "exit_rates": rates,
        "accuracy": {
            "overall": float(correct.mean()) if n else None,
            Outcome.EDGE.label: _acc(correct, edge),
            Outcome.CLOUD.label: _acc(correct, cloud),
            Outcome.DEGRADED.label: _acc(correct, degraded),
            "answered": _acc(correct, ~dropped & ~rejected),
            # Cheng et al.: the edge's answer on all samples, and "correct at either exit".
            "local": float(local_correct.mean()) if n else None,
            "ideal": float((local_correct | (correct & cloud)).mean()) if n else None,
        },
        "latency_s": {"overall": _pct(r.latency_s), **{p: _pct(r.latency_s[m]) for p, m in paths.items()}},
        "time_decomposition_s": {
            p: {"edge_compute": float(np.nanmean(r.edge_compute_s[m])), "link": float(np.nanmean(r.link_s[m])),
                "cloud_compute": float(np.nanmean(r.cloud_compute_s[m])),
                "edge_total": float(np.nanmean(r.server_total_s[m])), "client_total": float(np.nanmean(r.latency_s[m]))}
            for p, m in paths.items() if m.any()
        },
        "bytes": {"per_offloaded_sample": float(r.offload_bytes[cloud].mean()) if cloud.any() else 0.0,
                  "per_sample": float(r.offload_bytes.sum() / n) if n else 0.0, "total": int(r.offload_bytes.sum())},
        "throughput_samples_per_s": n / wall_s if wall_s > 0 else None,
        "wall_s": wall_s,
        "config": config or {},
    }


def _f(x, pct=False, ms=False) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    if pct:
        return f"{100 * x:.2f}%"
    if ms:
        return f"{1000 * x:.2f}"
    return f"{x:,.1f}" if isinstance(x, float) else str(x)


def format_report(rep: dict) -> str:
    """The report as aligned text tables."""
    lines = [f"samples {rep['samples']}   wall {rep['wall_s']:.1f}s   throughput "
             f"{_f(rep['throughput_samples_per_s'])} samples/s   integrity "
             f"{'OK' if rep['integrity']['ok'] else 'FAILED ' + json.dumps(rep['integrity'])}", "",
             "exit rates"]
    lines += [f"  {k:<12} {_f(v, pct=True):>8}" for k, v in rep["exit_rates"].items() if v or k == Outcome.CLOUD.label]
    lines += ["", "accuracy"]
    lines += [f"  {k:<12} {_f(v, pct=True):>8}" for k, v in rep["accuracy"].items()]
    lines += ["", f"latency (ms)  {'count':>7} {'mean':>8} {'p50':>8} {'p95':>8} {'p99':>8}"]
    for path, s in rep["latency_s"].items():
        if s.get("count"):
            lines.append(f"  {path:<11} {s['count']:>7} {_f(s['mean'], ms=True):>8} {_f(s['p50'], ms=True):>8} "
                         f"{_f(s['p95'], ms=True):>8} {_f(s['p99'], ms=True):>8}")
    head = f"{'edge':>8} {'link':>8} {'cloud':>8} {'edge-side':>10} {'client':>8}"
    lines += ["", f"time decomposition (ms, mean)  {head}"]
    for path, t in rep["time_decomposition_s"].items():
        lines.append(f"  {path:<29} {_f(t['edge_compute'], ms=True):>8} {_f(t['link'], ms=True):>8} "
                     f"{_f(t['cloud_compute'], ms=True):>8} {_f(t['edge_total'], ms=True):>10} "
                     f"{_f(t['client_total'], ms=True):>8}")
    b = rep["bytes"]
    lines += ["", f"bytes per offloaded sample {b['per_offloaded_sample']:,.0f}   per sample {b['per_sample']:,.0f}   "
                  f"total {b['total']:,}"]
    return "\n".join(lines)
