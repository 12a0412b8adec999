"""``ddnn reproduce hybrid``: Fig. 4 (accuracy vs energy) and Fig. 5 (exits by split) analogs."""

from __future__ import annotations

from ddnn.experiments.common import Context, savefig
from ddnn.experiments.hybrid_eval import find, find_reference
from ddnn.experiments.hybrid_plan import BITS, HybridSetup


def plots(ctx: Context, results: dict, setup: HybridSetup) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    links = []
    fig, ax = plt.subplots(figsize=(8, 5.2))
    colors = {1: "tab:blue", 2: "tab:orange", 4: "tab:green"}
    for bits in BITS:
        rs = [r for r in (find(results, bits, s, "joint") for s in setup.splits) if r]
        if not rs:
            continue
        ax.plot([r["total_uj"] for r in rs], [100 * r["overall_acc"] for r in rs], "-o", color=colors[bits],
                label=f"{bits}-bit edge, with early exit")
        ax.plot([r["noexit_uj"] for r in rs], [100 * r["final_acc"] for r in rs], "--s", color=colors[bits], alpha=0.6,
                label=f"{bits}-bit edge, no early exit")
        for r in rs:
            ax.annotate(r["split"], (r["total_uj"], 100 * r["overall_acc"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    fp = find_reference(results)
    ax.plot(fp["noexit_uj"], 100 * fp["final_acc"], "k*", ms=14, label="full precision, cloud only")
    fpx = find(results, None, setup.two_exit_split, "fp")
    if fpx:
        ax.plot(fpx["total_uj"], 100 * fpx["overall_acc"], "kD", ms=8,
                label=f"full precision + exit ({setup.two_exit_split})")
    ax.set(xlabel="energy per inference (µJ, compute, Table I)", ylabel="overall test accuracy (%)",
           title="Fig. 4(a) analog: accuracy vs energy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    links.append(savefig(fig, ctx, "fig4_accuracy_vs_energy.png"))
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for bits in BITS:
        rs = [r for r in (find(results, bits, s, "joint") for s in setup.splits) if r]
        xs = [int(r["split"].split("E")[0]) for r in rs]
        ax[0].plot(xs, [100 * r["edge_rate"] for r in rs], "-o", color=colors[bits], label=f"{bits}-bit")
        ax[1].plot(xs, [100 * r["overall_acc"] for r in rs], "-o", color=colors[bits], label=f"{bits}-bit")
    ax[0].set(xlabel="quantized layers at the edge (x in xE+yC)", ylabel="% exiting at the edge",
              title="Fig. 5 analog: early exits")
    ax[1].set(xlabel="quantized layers at the edge", ylabel="overall accuracy (%)", title="accuracy")
    for a in ax:
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    links.append(savefig(fig, ctx, "fig5_exits_by_split.png"))
    return links
