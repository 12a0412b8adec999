"""``ddnn reproduce hybrid``: the report's Markdown tables, ours beside the paper's."""

from __future__ import annotations

from ddnn.experiments.common import pct, table
from ddnn.experiments.hybrid_eval import best_per_bits, find, find_reference
from ddnn.experiments.hybrid_paper import PAPER_TABLE2, PAPER_TABLE2_C100, PAPER_TABLE3, PAPER_TABLE4
from ddnn.experiments.hybrid_plan import BITS, PAPER_EQUIVALENT, HybridSetup


def x_times(v) -> str:
    return "—" if v is None else f"{v:.2f}×"


def uj(v) -> str:
    return "—" if v is None else f"{v:.2f}"


def grid_table(results: dict, setup: HybridSetup) -> str:
    """Fig. 4 data: every configuration with early exit (joint) and the same network run without it."""
    fp = find_reference(results)
    rows = [["FP cloud-only (reference)", "ResNet-32 FP", "—", "—", pct(fp["final_acc"], 2), uj(fp["noexit_uj"]),
             "1.00×", uj(fp["noexit_uj_mem"]), "1.00×", "—", "—", "—"]]
    fpx = find(results, None, setup.two_exit_split, "fp")
    if fpx:
        rows.append([f"FP {setup.two_exit_split} + exit", PAPER_EQUIVALENT[setup.two_exit_split] + " FP",
                     pct(fpx["edge_rate"]), pct(fpx["edge_acc"]), pct(fpx["overall_acc"], 2), uj(fpx["total_uj"]),
                     x_times(fpx["x"]), uj(fpx["total_uj_mem"]), x_times(fpx["x_mem"]), "—", "—", "—"])
    for bits in BITS:
        for label in setup.splits:
            r = find(results, bits, label, "joint")
            if r is None:
                continue
            rows.append([f"{bits}-bit {label}", PAPER_EQUIVALENT.get(label, "?"), pct(r["edge_rate"]),
                         pct(r["edge_acc"]), pct(r["overall_acc"], 2), uj(r["total_uj"]), x_times(r["x"]),
                         uj(r["total_uj_mem"]), x_times(r["x_mem"]), pct(r["final_acc"], 2), uj(r["noexit_uj"]),
                         x_times(r["noexit_x"])])
    return table(["configuration", "paper analog", "% exit at edge", "edge acc", "overall acc", "energy µJ",
                  "vs FP", "µJ incl. memory", "vs FP (memory)", "no exit: acc", "no exit: µJ", "no exit: vs FP"],
                 rows)


def headline_table(results: dict, setup: HybridSetup) -> str:
    rows = []
    for b in best_per_bits(results, setup):
        for label, r in (("largest reduction", b["best"]), ("largest within 2 pts of FP", b["best_close"])):
            if r is None:
                rows.append([f"{b['bits']}-bit", label, "none", "", "", "", ""])
                continue
            rows.append([f"{b['bits']}-bit", label, r["split"], pct(r["edge_rate"]), pct(r["overall_acc"], 2),
                         f"{100 * (r['overall_acc'] - results['fp_acc']):+.2f} pts", x_times(r["x"])])
    return table(["edge precision", "criterion", "split", "% exit at edge", "overall acc", "vs FP acc", "energy vs FP"],
                 rows)


def table2_table(results: dict, setup: HybridSetup) -> str:
    """Table II: separate vs joint optimization on the 16E+14C analog (1-bit)."""
    paper = PAPER_TABLE2 if results["num_classes"] == 10 else PAPER_TABLE2_C100
    rows = []
    for variant in ("separate", "joint"):
        r = find(results, 1, setup.separate_split, variant)
        if r:
            rows.append([variant, pct(r["edge_rate"]), pct(paper[variant]["exit"]), pct(r["overall_acc"], 2),
                         pct(paper[variant]["acc"], 2), uj(r["total_uj"]), x_times(r["x"])])
    noexit = find(results, 1, setup.separate_split, "noexit")
    if noexit:
        rows.append(["(backbone of separate, no exit)", "0.0%", "", pct(noexit["final_acc"], 2), "",
                     uj(noexit["noexit_uj"]), x_times(noexit["noexit_x"])])
    return table([f"1-bit {setup.separate_split} ({PAPER_EQUIVALENT[setup.separate_split]})", "% early exit", "paper",
                  "accuracy", "paper", "energy µJ", "vs FP"], rows)


def table3_table(results: dict, setup: HybridSetup) -> str:
    """Table III: edge and expected cloud energy per split and bit-width, ours beside the paper's."""
    rows = []
    for label in setup.splits:
        analog = PAPER_EQUIVALENT.get(label)
        cells = [f"{label} ({analog})"]
        for bits in BITS:
            r = find(results, bits, label, "joint")
            paper = PAPER_TABLE3.get(analog or "", {}).get(bits)
            cells.append("—" if r is None else f"{10 * r['edge_uj']:.0f} / {10 * r['cloud_uj']:.0f}")
            cells.append("" if paper is None else f"{paper[0]} / {paper[1]}")
        rows.append(cells)
    return table(["split", "1-bit ours", "1-bit paper", "2-bit ours", "2-bit paper", "4-bit ours", "4-bit paper"], rows)


def table4_table(results: dict, setup: HybridSetup) -> str:
    """Table IV: one vs two edge exits on the 20E+10C analog (1-bit)."""
    rows = []
    for count, variant in ((1, "joint"), (2, "2exits")):
        r = find(results, 1, setup.two_exit_split, variant)
        if r is None:
            continue
        p = PAPER_TABLE4[count]
        rows.append([count, ", ".join(pct(r["exit_rates"][e]) for e in r["exits"]),
                     ", ".join(pct(v) for v in p["exits"]), pct(r["overall_acc"], 2), pct(p["acc"], 2),
                     f"{10 * r['total_uj']:.0f}", p["mj"], x_times(r["x"])])
    return table(["# edge exits", "% exiting at each", "paper", "accuracy", "paper", "energy mJ / 10k images",
                  "paper mJ", "vs FP"], rows)


def energy_model_table(rows: list[dict]) -> str:
    """:func:`~ddnn.experiments.hybrid_eval.energy_model_rows` as a table."""
    cells = [[r["split"], r["bits"], r["paper_edge"], f"{r['edge']:.0f}", f"{r['edge_mem']:.0f}", r["paper_cloud"],
              f"{r['cloud']:.0f}", f"{r['cloud_mem']:.0f}", f"{100 * r['implied']:.0f}%",
              f"{100 * r['implied_mem']:.0f}%"] for r in rows]
    return table(["split", "bits", "paper edge", "ours edge", "ours edge + mem", "paper cloud", "ours cloud at 0% exit",
                  "+ mem", "implied exit rate", "implied (mem)"], cells)
