"""``ddnn reproduce``: rerun one of the papers' experiments and write its Markdown report."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    from ddnn.experiments import EXPERIMENTS

    p = sub.add_parser(
        "reproduce", help="reproduce a paper's experiment and write a Markdown report",
        description="Train what the experiment needs (reusing checkpoints made by the same command), evaluate, "
        "and write OUT/README.md with tables, PNG plots, the paper's numbers beside ours, and the exact commands. "
        "Experiments: " + "; ".join(f"{k}: {v.TITLE}" for k, v in EXPERIMENTS.items()),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("experiment", choices=sorted(EXPERIMENTS))
    p.add_argument("--quick", action="store_true",
                   help="smoke test: tiny models, few images, 1 epoch (minutes on 2 CPU cores)")
    p.add_argument("--out", help="report folder (default: results/reproduce/EXPERIMENT[-quick])")
    p.add_argument("--work", help="checkpoints and caches (default: results/reproduce-work/EXPERIMENT[-quick])")
    p.add_argument("--data", help="training data (default: $DDNN_TRAIN_DATA, else ../shared/datasets/cifar10-jpeg)")
    p.add_argument("--test-data", help="evaluation data, its test split (default: the shipped CIFAR-10 test pack)")
    p.add_argument("--test-limit", type=int, help="evaluate on this many test images (default: all; quick: 500)")
    p.add_argument("--energy-table", metavar="FILE",
                   help="per-operation energies (JSON, format of ddnn/resources/energy_table1.json; "
                   "default: Long et al. Table I)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--train-only", action="store_true", help="train the experiment's models, write no report")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ddnn.experiments import EXPERIMENTS
    from ddnn.experiments.common import Context

    if args.threads:
        torch.set_num_threads(args.threads)
    suffix = "-quick" if args.quick else ""
    ctx = Context(
        name=args.experiment,
        out=Path(args.out or f"results/reproduce/{args.experiment}{suffix}"),
        work=Path(args.work or f"results/reproduce-work/{args.experiment}{suffix}"),
        quick=args.quick, train_data=args.data, test_data=args.test_data, threads=args.threads,
        train_only=args.train_only, test_limit=args.test_limit or (500 if args.quick else None),
        energy_table=args.energy_table,
    )
    path = EXPERIMENTS[args.experiment].run(ctx)
    print(path)
    return 0
