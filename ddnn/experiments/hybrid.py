"""``ddnn reproduce hybrid``: Long et al. (``001_…``) Fig. 4 and Tables II-IV on CIFAR-10.

Bit-widths 1/2/4 × xE+yC splits with an early exit (joint optimization), the same networks
without early exit, separate vs joint optimization, one vs two edge exits, and the energy of each
against the full-precision cloud-only network.

This module trains the networks and assembles the report; the numbers come from
:mod:`~ddnn.experiments.hybrid_eval`, the tables from :mod:`~ddnn.experiments.hybrid_tables`,
the figures from :mod:`~ddnn.experiments.hybrid_plots`, and every conclusion is computed by
:mod:`~ddnn.experiments.hybrid_findings`; the paper's numbers are in :mod:`~ddnn.experiments.hybrid_paper`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from ddnn.checkpoint import load_checkpoint, save_checkpoint
from ddnn.experiments.common import Context, write_report
from ddnn.experiments.hybrid_eval import energy_model_rows, evaluate_all
from ddnn.experiments.hybrid_findings import discussion, energy_model_findings, table3_trends
from ddnn.experiments.hybrid_paper import ENTROPY_THRESHOLD
from ddnn.experiments.hybrid_plan import (
    BITS,
    FULL,
    FULL_BASE,
    PAPER_EQUIVALENT,
    QUICK,
    HybridSetup,
    exit_weights,
    run_name,
)
from ddnn.experiments.hybrid_plots import plots
from ddnn.experiments.hybrid_tables import (
    energy_model_table,
    grid_table,
    headline_table,
    table2_table,
    table3_table,
    table4_table,
)
from ddnn.models import build_model
from ddnn.models.hybrid import block_convs, init_from_full_precision

log = logging.getLogger(__name__)


def setup_for(ctx: Context) -> HybridSetup:
    return QUICK if ctx.quick else FULL


def base_checkpoint(ctx: Context, setup: HybridSetup) -> Path:
    """The full-precision network every run starts from (quick mode trains a tiny one)."""
    if not ctx.quick:
        # Relative to the working directory (the repository root in the documented commands), so the
        # commands in the report read `--init models/...`.
        return Path(os.path.relpath(FULL_BASE))
    return ctx.train("base-fp", ["--exits", "", *setup.train_flags()])


def hybrid_init(ctx: Context, base: Path, name: str, spec) -> Path:
    """A checkpoint of ``spec`` holding the base network's weights (see ``init_from_full_precision``)."""
    src = load_checkpoint(base)
    torch.manual_seed(0)  # the fresh parts (quantized blocks' BN, exit heads) start the same every time
    model = build_model(spec)
    keys = init_from_full_precision(model, src.model.state_dict())
    path = ctx.work / "init" / f"{name}.pt"
    save_checkpoint(path, model, src.classes, source=str(base), source_sha256=src.sha256, copied=keys,
                    command=f"init_from_full_precision({base})")
    return path


def train_models(ctx: Context) -> dict[str, Path]:
    """Train (or reuse) every network of the experiment; return checkpoint paths by run name."""
    setup = setup_for(ctx)
    base = base_checkpoint(ctx, setup)
    flags = setup.train_flags()
    num_classes = load_checkpoint(base).spec.num_classes
    runs: dict[str, Path] = {}
    # Full-precision references: cloud-only (no exit), and with the edge exit of the 20E+10C analog.
    runs["fp"] = ctx.train("fp", ["--exits", "", "--init", str(base), *flags])
    fp_exit = setup.config(setup.two_exit_split).exits(1)
    runs[run_name(None, setup.two_exit_split)] = ctx.train(
        run_name(None, setup.two_exit_split),
        ["--exits", ",".join(map(str, fp_exit)), "--loss-weights", exit_weights(fp_exit), "--init", str(base), *flags])

    def hybrid_run(bits: int, label: str, exit_count: int = 1, variant: str = "", extra: list[str] | None = None):
        cfg = setup.config(label)
        name = run_name(bits, label, variant)
        exits = cfg.exits(exit_count)
        argv = ["--hybrid", label, "--quant-bits", str(bits), "--hybrid-exits", str(exit_count)]
        if exits:
            argv += ["--loss-weights", exit_weights(exits)]
        if extra is None:
            spec = cfg.spec(bits, setup.depth, num_classes, exit_count=exit_count, width=setup.width)
            init = hybrid_init(ctx, base, name, spec)
            extra = ["--init", str(init)]
        runs[name] = ctx.train(name, [*argv, *extra, *flags])

    # The 1-bit runs first: they carry the paper's headline numbers.
    for bits in BITS:
        for label in setup.splits:
            hybrid_run(bits, label)
        if bits == 1:
            # Table II: separate optimization = train without exit, then only the exit on the frozen network.
            hybrid_run(1, setup.separate_split, exit_count=0, variant="noexit")
            noexit = runs[run_name(1, setup.separate_split, "noexit")]
            hybrid_run(1, setup.separate_split, variant="separate", extra=["--mode", "separate", "--init", str(noexit)])
            # Table IV: two edge exits, one mid-edge and one at its end.
            hybrid_run(1, setup.two_exit_split, exit_count=2, variant="2exits")
    return runs

TITLE = "Long et al. hybrid quantized edge + full-precision cloud: bit-widths, splits, energy"


def run(ctx: Context) -> Path:
    """Train, evaluate and write the report; return its path (the work folder with --train-only)."""
    runs = train_models(ctx)
    if ctx.train_only:
        return ctx.work
    setup = setup_for(ctx)
    results = evaluate_all(ctx, runs)
    dataset = "CIFAR-10" if results["num_classes"] == 10 else f"{results['num_classes']}-class data"
    table_ = results["table"]
    energy_rows = energy_model_rows(ctx.energy_table)
    sections = [
        "Paper: Long, Chakraborty, Roy, *Conditionally Deep Hybrid Neural Networks Across Edge and Cloud* "
        "(`001_b1e481eb25281f7b.txt`): quantized edge layers with an early exit, full-precision cloud layers; "
        "Fig. 4, Tables II-IV.",
        "## Headline\n\n" + discussion(results, setup),
        "## Best configuration per bit-width (energy against the full-precision cloud-only network)\n\n"
        + headline_table(results, setup),
        "## Setup and deviations from the paper\n\n" + "\n".join([
            f"* Data: {dataset}, {results['n_test']} test images. Exit rule: entropy (nats) of the exit's softmax "
            f"< {results['threshold']:g} (the paper's {ENTROPY_THRESHOLD.get(results['num_classes'], '?')} for this "
            "dataset).",
            f"* Network: ResNet-{setup.depth}{f' width {setup.width}' if setup.width else ''} "
            f"({block_convs(setup.depth)} block convolutions) instead of ResNet-32 (30); splits map to the paper's by "
            "the stage position of the edge exit: " + ", ".join(f"{k} ↔ {v}" for k, v in PAPER_EQUIVALENT.items()
                                                               if k in setup.splits) + ".",
            "* Quantizer: QuanConv = BN → k-bit activation quantizer → convolution with α-scaled k-bit weights "
            "(`ddnn/models/quant.py`: symmetric uniform quantizer on [-1, 1], Eq. 1/3 with v0 = 1, v1 = 2, "
            "v2 = 1/2, i.e. DoReFa-Net's uniform quantizer; binary = sign with XNOR-Net's α = ‖W‖₁/n; "
            "clipped straight-through gradients). First layer, residual connections, exits and cloud layers are "
            "full precision.",
            f"* Training: every network starts from the shipped full-precision ResNet-{setup.depth} "
            "(`models/resnet20-aux-cifar10.pt`, 60 GPU epochs on the same 45k split) and is fine-tuned for "
            f"{setup.epochs} epoch(s)"
            + (f" over a fixed {setup.limit:,}-image draw of the training data (90% train / 10% validation, to fit "
               "the 17 fine-tunes into about an hour on 2 CPU cores)" if setup.limit else "")
            + f" in its own configuration (SGD, lr {setup.lr} with 0.2-epoch warm-up and cosine "
            "decay, batch 128, weight decay 5e-4), joint loss λ = 0.6 on the early exit and 0.4 on the final exit "
            "(two exits: 0.3 + 0.3 + 0.4). The paper trains each network fully (epochs not stated) with "
            "XNOR-Net's algorithm. Separate optimization = the network fine-tuned without exit, then only the "
            "exit trained on the frozen network. 'No early exit' points in Fig. 4 are the jointly trained "
            "networks run cloud-only (their final exit), except the separate-optimization backbone, which was "
            "trained without exit.",
            f"* Energy: `ddnn/energy.py` with `{table_.name}` "
            f"(32-bit MAC {table_.mac(32)} pJ, binary MAC {table_.mac(1)} pJ, 2-bit {table_.mac(2)} pJ, 4-bit "
            f"{table_.mac(4)} pJ, 32-bit add {table_.add_32bit_pj} pJ, memory {table_.memory_pj_per_bit} pJ/bit); "
            "'energy' is compute energy (MACs at their precision, BN and α rescaling of quantized layers as 32-bit "
            "MACs, residual/pooling/bias additions); 'incl. memory' adds weights read once per inference and each "
            "layer's input read and output written once. Expected energy = edge energy (every sample) + "
            "(1 − edge exit rate) × cloud energy. Communication energy is not counted, as in the paper.",
        ]),
        f"## Fig. 4 (accuracy and energy of every configuration, {dataset})\n\n" + grid_table(results, setup),
        "## Table II: separate vs joint optimization\n\n" + table2_table(results, setup)
        + "\n\nPaper values are its CIFAR-10 row (CIFAR-100 row for 100 classes).",
        "## Table III: energy at the edge / in the cloud (mJ per 10,000 test images)\n\n"
        + table3_table(results, setup)
        + f"\n\nOurs: edge energy (every sample) / expected cloud energy at our exit rates, ResNet-{setup.depth} "
        f"splits on {dataset}, in mJ per 10,000 images (= µJ per inference × 10) to match the paper's scale. The "
        "paper's numbers are for ResNet-32 (on the dataset the check below infers), so compare trends. "
        + table3_trends(results, setup),
        "## Energy-model check on the paper's own network (ResNet-32, 100 classes, no training involved)\n\n"
        + energy_model_table(energy_rows)
        + "\n\nOur Table-I model on the paper's ResNet-32 splits with 100-class exits, mJ per 10,000 images. "
        "Edge energy does not depend on exit rates, so the edge columns compare the models directly; cloud energy "
        "is given at 0% exits, and 1 − paper/ours is the edge exit rate the paper's cloud number implies. "
        + energy_model_findings(energy_rows),
        "## Table IV: one vs two edge exits\n\n" + table4_table(results, setup),
        "## Figures\n\n" + "\n\n".join(plots(ctx, results, setup)),
    ]
    return write_report(ctx, f"Hybrid quantized edge / full-precision cloud (Long et al.): {dataset}", sections)
