"""AO vs CDL vs BranchyNet on one edge exit: accuracy against % kept at the edge (Lo et al.
Fig. 11) and the workload-sharing table at equal overall accuracy (Table II).

Knobs are chosen on the validation split (AO's densities are fitted there too): for each method
the knobs that keep 0%, 1%, ... 100% of the validation samples at the edge, plus AO's knob 1
(the paper's rule). Every knob is then evaluated on the test split, which is what the curves,
the CSV and the table report.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ddnn.calibration import KnobCurve, cascade_metrics, fit_criterion
from ddnn.evaluation.costs import SplitCosts, expected_costs
from ddnn.evaluation.report import accuracy_metrics
from ddnn.evaluation.routing import route_samples
from ddnn.policies import EdgePolicy, softmax
from ddnn.policies.ao_margin import DEFAULT_BANDWIDTH, DEFAULT_MIN_PAIR_SAMPLES

# Display name -> calibration method, in the paper's order.
SWEEP_METHODS = {"CDL": "cdl", "BranchyNet": "entropy", "AO": "ao"}
REFERENCE = "AO"
CSV_FIELDS = ("method", "knob", "reference", "paper_rule", "val_edge_exit_rate", "val_acc_overall", "edge_exit_rate",
              "acc_overall", "acc_aux_allocate", "acc_prin_allocate", "edge_macs_norm", "cloud_macs_norm",
              "link_bytes", "energy_uj", "energy_reduction")


@dataclass
class SweepResult:
    """Test-split metrics of every method along its validation-chosen knobs.

    ``rows`` are dicts with the :data:`CSV_FIELDS`; ``separate`` the exits' separate test
    accuracies; ``info`` describes the run.
    """

    exit: str
    rows: list[dict]
    separate: dict[str, float]
    info: dict = field(default_factory=dict)

    def curve(self, method: str) -> list[dict]:
        """The swept rows of one method (reference points left out), sorted by test edge exit rate."""
        rows = (r for r in self.rows if r["method"] == method and not r["reference"])
        return sorted(rows, key=lambda r: (r["edge_exit_rate"], r["val_edge_exit_rate"]))


def _row(method: str, knob: float, val: dict, test: dict, costs: dict, reference: bool = False) -> dict:
    return {"method": method, "knob": float(knob), "reference": reference, "paper_rule": reference and knob == 1.0,
            "val_edge_exit_rate": val["edge_exit_rate"], "val_acc_overall": val["acc_overall"],
            "edge_exit_rate": test["edge_exit_rate"], "acc_overall": test["acc_overall"],
            "acc_aux_allocate": test["acc_aux_allocate"], "acc_prin_allocate": test["acc_prin_allocate"],
            "edge_macs_norm": costs["macs"]["edge_expected_norm"],
            "cloud_macs_norm": costs["macs"]["cloud_expected_norm"],
            # fp32 features, or the uint8 image when the cloud takes the raw input
            "link_bytes": next(iter(costs["link_bytes"]["expected_per_sample"].values())),
            # compute energy per inference (Long et al.'s Table I unless the costs carry another table)
            "energy_uj": costs["energy"]["compute"]["total_uj"],
            "energy_reduction": costs["energy"]["compute"]["reduction"]}


def sweep(val_logits: dict[str, np.ndarray], val_labels: np.ndarray, test_logits: dict[str, np.ndarray],
          test_labels: np.ndarray, exit: str, costs: SplitCosts, points: int = 101,
          bandwidth: float = DEFAULT_BANDWIDTH, min_pair_samples: int = DEFAULT_MIN_PAIR_SAMPLES,
          ao_knobs: tuple[float, ...] = (1.0,)) -> SweepResult:
    """Sweep CDL, BranchyNet and AO on ``exit``: knobs chosen on validation, metrics on test.

    ``points`` validation exit rates are spaced evenly over [0, 1]; ``ao_knobs`` are AO
    reference operating points for Table II (knob 1 is the paper's rule).
    """
    rows = []
    for name, method in SWEEP_METHODS.items():
        crit = fit_criterion(method, softmax(val_logits[exit]), val_labels, bandwidth, min_pair_samples)
        curve = KnobCurve({exit: crit}, None, val_logits, val_labels, (exit,))
        reachable = curve.rate(len(curve) - 1)
        indices = sorted({curve.index_for_exit_rate(min(g, reachable)) for g in np.linspace(0, 1, points)})
        knobs = [(float(curve.knobs[i]), False) for i in indices]
        if method == "ao":
            knobs += [(float(k), True) for k in ao_knobs]
        for knob, reference in knobs:
            policy = EdgePolicy({exit: crit.with_knob(knob)})
            val = cascade_metrics(policy, val_logits, val_labels, (exit,))
            outcomes = route_samples(policy, test_logits, (exit,))
            test = accuracy_metrics(outcomes, test_labels, {e: test_logits[e] for e in (exit, "final")})
            rows.append(_row(name, knob, val, test, expected_costs(costs, outcomes.exit_index), reference))
    separate = {k: float((v.argmax(axis=1) == test_labels).mean()) for k, v in test_logits.items()}
    return SweepResult(exit, rows, separate)


def kept_at_accuracy(curve: list[dict], accuracy: float) -> dict | None:
    """Interpolate a method's curve at an overall accuracy, as Lo et al. do for Table II.

    Returns the edge exit rate and allocate accuracies at the *largest* exit rate where the
    (piecewise-linear) accuracy curve reaches ``accuracy``; linear extrapolation from the two
    nearest points when the curve never reaches it (``extrapolated`` True); None for a curve of
    fewer than two distinct points.
    """
    xs = np.array([r["edge_exit_rate"] for r in curve])
    ys = np.array([r["acc_overall"] for r in curve])
    if len(np.unique(xs)) < 2:
        return None
    best: tuple[int, float] | None = None
    for i in range(len(xs) - 1):
        y0, y1 = ys[i] - accuracy, ys[i + 1] - accuracy
        if y0 == 0 or y0 * y1 < 0 or y1 == 0:
            t = 0.0 if y0 == 0 else (1.0 if y1 == 0 else y0 / (y0 - y1))
            best = (i, t)  # keep the last crossing: the most a method can keep at that accuracy
    extrapolated = best is None
    if best is None:
        # Extrapolate along the end of the curve whose accuracy is nearest the target.
        i = 0 if abs(ys[0] - accuracy) < abs(ys[-1] - accuracy) else len(xs) - 2
        while i + 1 < len(xs) and xs[i + 1] == xs[i]:
            i += 1
        if i + 1 >= len(xs) or ys[i + 1] == ys[i]:
            return None
        best = (i, (accuracy - ys[i]) / (ys[i + 1] - ys[i]))
    i, t = best

    def lerp(key):
        a, b = curve[i].get(key), curve[i + 1].get(key)
        return None if a is None or b is None else float(a + t * (b - a))

    return {"edge_exit_rate": float(np.clip(xs[i] + t * (xs[i + 1] - xs[i]), 0.0, 1.0)),
            "acc_aux_allocate": lerp("acc_aux_allocate"), "acc_prin_allocate": lerp("acc_prin_allocate"),
            "energy_uj": lerp("energy_uj"), "acc_overall": float(accuracy), "extrapolated": extrapolated}


def table2(result: SweepResult) -> list[dict]:
    """Lo et al. Table II at each AO reference point (the paper's knob 1 first).

    For each AO reference operating point (``ao_knobs`` of :func:`sweep`), CDL's and
    BranchyNet's % kept at the edge at the same test overall accuracy is interpolated; gain =
    AO's share / theirs − 1, as the paper defines it.
    """
    refs = sorted((r for r in result.rows if r["reference"]), key=lambda r: (not r["paper_rule"], r["knob"]))
    out = []
    for ref in refs:
        group = {"reference_knob": ref["knob"], "acc_overall": ref["acc_overall"], "methods": []}
        for name in SWEEP_METHODS:
            point: dict | None
            if name == REFERENCE:
                point = {k: ref.get(k) for k in ("edge_exit_rate", "acc_aux_allocate", "acc_prin_allocate", "energy_uj",
                                                 "acc_overall")}
                point["extrapolated"] = False
            else:
                point = kept_at_accuracy(result.curve(name), ref["acc_overall"])
            gain = None
            if name != REFERENCE and point and point["edge_exit_rate"] > 0:
                gain = ref["edge_exit_rate"] / point["edge_exit_rate"] - 1.0
            group["methods"].append({"method": name, **(point or {}), "gain": gain})
        out.append(group)
    return out


def write_csv(result: SweepResult, path: Path) -> Path:
    """One row per swept knob and method, the :data:`CSV_FIELDS`."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in result.rows:
            w.writerow(r)
    return path


def plot(result: SweepResult, path: Path) -> Path:
    """Overall accuracy and edge accuracy against % kept at the edge, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"CDL": ("tab:blue", "s"), "BranchyNet": ("tab:orange", "^"), "AO": ("tab:green", "o")}
    for name in SWEEP_METHODS:
        curve = result.curve(name)
        x = [100 * r["edge_exit_rate"] for r in curve]
        color, marker = styles[name]
        axes[0].plot(x, [100 * r["acc_overall"] for r in curve], color=color, marker=marker, ms=3, lw=1.2,
                     label=name)
        aux = [(100 * r["edge_exit_rate"], 100 * r["acc_aux_allocate"]) for r in curve if r["acc_aux_allocate"]]
        axes[1].plot(*zip(*aux, strict=True), color=color, marker=marker, ms=3, lw=1.2, label=name)
    refs = [r for r in result.rows if r["reference"]]
    for r in refs:
        axes[0].plot(100 * r["edge_exit_rate"], 100 * r["acc_overall"], "k*" if r["paper_rule"] else "kx",
                     ms=11 if r["paper_rule"] else 7)
        axes[0].annotate(f"AO {r['knob']:g}", (100 * r["edge_exit_rate"], 100 * r["acc_overall"]), fontsize=7,
                         xytext=(4, 4), textcoords="offset points")
    axes[0].axhline(100 * result.separate["final"], color="gray", ls="--", lw=0.8, label="cloud only")
    axes[0].axhline(100 * result.separate[result.exit], color="gray", ls=":", lw=0.8, label=f"{result.exit} only")
    axes[0].set(xlabel="% of inputs kept at the edge", ylabel="overall accuracy (%)",
                title=f"Overall accuracy vs edge share ({result.exit}, test split)")
    axes[1].set(xlabel="% of inputs kept at the edge", ylabel="acc_aux_allocate (%)",
                title="Accuracy of the answers given at the edge")
    lo = min(100 * result.separate[result.exit], 100 * result.separate["final"]) - 1.0
    axes[0].set_ylim(lo, None)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _uj(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def markdown(result: SweepResult, table: list[dict]) -> str:
    """A Markdown summary: setup, Table II at each AO reference point, and the mean gains."""
    info = result.info
    lines = [f"# AO vs CDL vs BranchyNet on `{result.exit}`", "",
             f"Checkpoint `{info.get('checkpoint', '?')}` (sha256 `{str(info.get('checkpoint_sha256', '?'))[:16]}…`). "
             f"Knobs chosen and AO densities fitted on the validation split ({info.get('val_samples', '?')} images "
             f"from `{info.get('val_source', '?')}`); every number below is measured on the test split "
             f"({info.get('test_samples', '?')} images, `{info.get('test_source', '?')}`).", "",
             f"Separate accuracies (test): `{result.exit}` {_pct(result.separate[result.exit])} "
             f"(acc_aux_separate), `final` {_pct(result.separate['final'])} (acc_prin_separate).", "",
             "Table II layout: the % of inputs reported at the edge by each method at the overall accuracy of "
             "the AO operating point, CDL and BranchyNet interpolated along their test curves (the largest share "
             "at which they reach that accuracy; *extrapolated* where they never do). Gain = AO share / method "
             "share − 1.", ""]
    for group in table:
        lines += [f"## AO knob {group['reference_knob']:g}: overall accuracy {_pct(group['acc_overall'])}", "",
                  "| method | % kept at the edge | gain of AO | acc_aux_allocate | acc_prin_allocate | overall "
                  "| energy µJ/inference |",
                  "|---|---|---|---|---|---|---|"]
        for m in group["methods"]:
            gain = "-" if m["gain"] is None else f"{100 * m['gain']:+.2f}%"
            note = " (extrapolated)" if m.get("extrapolated") else ""
            lines.append(f"| {m['method']} | {_pct(m.get('edge_exit_rate'))}{note} | {gain} | "
                         f"{_pct(m.get('acc_aux_allocate'))} | {_pct(m.get('acc_prin_allocate'))} | "
                         f"{_pct(m.get('acc_overall'))} | {_uj(m.get('energy_uj'))} |")
        lines.append("")
    gains = {name: [m["gain"] for g in table for m in g["methods"] if m["method"] == name and m["gain"] is not None]
             for name in SWEEP_METHODS if name != REFERENCE}
    summary = ", ".join(f"{name} {100 * np.mean(v):+.2f}%" for name, v in gains.items() if v)
    if summary:
        lines += [f"Mean gain of AO over the reference points: {summary} (paper, Table II: +13% over CDL, +21% over "
                  "BranchyNet on average).", ""]
    lines += [f"Energy: compute energy per inference ({result.info.get('energy_table', 'Long et al. Table I')}): "
              "edge segment for every sample plus the cloud part for the offloaded ones.", "",
              "Files: `sweep.csv` (every knob, test metrics), `sweep.png` (curves), `table2.csv`, `sweep.json`.", ""]
    return "\n".join(lines)


def write_outputs(result: SweepResult, out: str | Path) -> dict[str, Path]:
    """Write sweep.csv, sweep.png, table2.csv, summary.md and sweep.json into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = table2(result)
    paths = {"csv": write_csv(result, out / "sweep.csv"), "png": plot(result, out / "sweep.png")}
    with open(out / "table2.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["reference_knob", "method", "edge_exit_rate", "gain", "acc_aux_allocate", "acc_prin_allocate",
                    "acc_overall", "extrapolated", "energy_uj"])
        for g in table:
            for m in g["methods"]:
                w.writerow([g["reference_knob"], m["method"], m.get("edge_exit_rate"), m["gain"],
                            m.get("acc_aux_allocate"), m.get("acc_prin_allocate"), m.get("acc_overall"),
                            m.get("extrapolated"), m.get("energy_uj")])
    paths["table2"] = out / "table2.csv"
    paths["markdown"] = out / "summary.md"
    paths["markdown"].write_text(markdown(result, table))
    paths["json"] = out / "sweep.json"
    paths["json"].write_text(json.dumps({"exit": result.exit, "info": result.info, "separate": result.separate,
                                         "table2": table, "rows": result.rows}, indent=1) + "\n")
    return paths
