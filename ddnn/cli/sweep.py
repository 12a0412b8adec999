"""``ddnn sweep``: AO vs CDL vs BranchyNet curves and Lo et al.'s Table II on one edge exit."""

from __future__ import annotations

import argparse

from ddnn.cli.eval import HelpFormatter, add_engine_argument, engine_spec


def parse_knobs(text: str) -> tuple[float, ...]:
    """Comma-separated positive numbers, e.g. ``1,2,4``."""
    try:
        knobs = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 1,2,4, got {text!r}") from None
    if not knobs or any(not k >= 0 for k in knobs):
        raise argparse.ArgumentTypeError(f"expected non-negative AO knobs like 1,2,4, got {text!r}")
    return knobs


def register(sub) -> None:
    from ddnn.policies.ao_margin import DEFAULT_BANDWIDTH, DEFAULT_MIN_PAIR_SAMPLES

    p = sub.add_parser("sweep", help="AO vs CDL vs BranchyNet: accuracy vs %% kept at the edge, Table II",
                       description="For one edge exit, sweep the knobs of CDL (max softmax), BranchyNet (entropy) "
                       "and AO (KDE margins). Knobs are chosen and AO fitted on the checkpoint's validation split; "
                       "all reported numbers are on the test split. Writes sweep.csv, sweep.png (Lo et al. "
                       "Fig. 11), table2.csv (Table II: % kept at the edge at AO's overall accuracy, and AO's "
                       "gain), summary.md and sweep.json.",
                       formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", default=None, help="checkpoint (default: the shipped models/resnet20w32-cifar10.pt)")
    p.add_argument("--exit", default=None, help="edge exit to sweep (default: the deepest edge exit; with --aux, "
                   "the auxiliary network's final exit)")
    p.add_argument("--aux", default=None, metavar="CHECKPOINT",
                   help="Lo et al.'s arrangement: this auxiliary network answers at the edge (its exit --exit) and "
                   "--checkpoint is the principal network in the cloud, fed the raw input")
    p.add_argument("--data", default=None, help="the checkpoint's training data, for its validation split "
                   "(default: the recorded source, else $DDNN_TRAIN_DATA or ../shared/datasets/cifar10-jpeg)")
    p.add_argument("--test-data", default=None, help="test data (default: $DDNN_TEST_DATA, else the shipped "
                   "data/cifar10-test.npz)")
    p.add_argument("--points", type=int, default=101, help="validation exit rates swept per method, 0..100%%")
    p.add_argument("--ao-knobs", type=parse_knobs, default="1,2,4",
                   help="AO reference points for Table II (1 = the paper's rule)")
    p.add_argument("--bandwidth", type=float, default=DEFAULT_BANDWIDTH, help="AO: Gaussian KDE bandwidth")
    p.add_argument("--min-pair-samples", type=int, default=DEFAULT_MIN_PAIR_SAMPLES,
                   help="AO: fewest validation samples for a pair-wise threshold")
    p.add_argument("--energy-table", metavar="FILE", default=None,
                   help="per-operation energies, JSON (default: Long et al.'s Table I, "
                        "ddnn/resources/energy_table1.json)")
    p.add_argument("-o", "--out", default="results/sweep", help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_engine_argument(p)
    p.set_defaults(func=run)


def _edge_and_cloud(args, ck, progress):
    """Validation and test logits keyed by the swept edge exit and ``final`` (the cloud), the
    split costs, and the exit name; from one checkpoint, or an auxiliary plus a principal one."""
    import numpy as np

    from ddnn.calibration import validation_split
    from ddnn.checkpoint import load_checkpoint
    from ddnn.data import load_split
    from ddnn.evaluation import aux_principal_costs, exit_logits, split_costs
    from ddnn.paths import default_test_source

    edge_ck = load_checkpoint(args.aux) if args.aux else ck
    engine = engine_spec(args)
    edge = [e for e in edge_ck.exit_names if e != "final"]
    candidates = [*edge, "final"] if args.aux else edge
    if not candidates:
        raise ValueError(f"{edge_ck.path}: the checkpoint has no early exit to sweep")
    exit = args.exit or candidates[-1]
    if exit not in candidates:
        which = "auxiliary network's exits" if args.aux else "checkpoint's edge exits"
        raise ValueError(f"--exit {exit}: not an edge exit; the {which}: {candidates}")
    val = validation_split(ck, args.data)
    test = load_split(args.test_data or default_test_source(), "test")
    if not args.aux:
        return (exit_logits(ck, val, progress=progress, engine=engine),
                exit_logits(ck, test, progress=progress, engine=engine), split_costs(ck.model, [exit]), exit, val, test)
    aux_val = validation_split(edge_ck, args.data)
    if not np.array_equal(aux_val.images, val.images):
        raise ValueError(f"--aux {args.aux}: trained with a different validation split than {ck.path}")
    name = f"aux_{exit}"
    logits = []
    for arrays in (val, test):
        principal = exit_logits(ck, arrays, progress=progress, engine=engine)
        aux = exit_logits(edge_ck, arrays, progress=progress, engine=engine)
        logits.append({name: aux[exit], "final": principal["final"]})
    return (*logits, aux_principal_costs(edge_ck.model, ck.model, [exit]), name, val, test)


def run(args) -> int:
    import dataclasses

    from ddnn.calibration import repo_relative
    from ddnn.checkpoint import load_checkpoint
    from ddnn.energy import EnergyTable
    from ddnn.paths import SHIPPED_CHECKPOINT
    from ddnn.sweep import sweep as run_sweep
    from ddnn.sweep import table2, write_outputs

    if args.points < 2:
        raise ValueError(f"--points must be at least 2, got {args.points}")
    if not 0.0 < args.bandwidth <= 1.0:
        raise ValueError(f"--bandwidth must be in (0, 1], got {args.bandwidth}")
    table = EnergyTable.load(args.energy_table)  # fail before any forward pass
    ck = load_checkpoint(args.checkpoint or SHIPPED_CHECKPOINT)
    progress = False if args.no_progress else None
    val_logits, test_logits, costs, exit, val, test = _edge_and_cloud(args, ck, progress)
    costs = dataclasses.replace(costs, energy_table=table)
    result = run_sweep(val_logits, val.labels, test_logits, test.labels, exit, costs, points=args.points,
                       bandwidth=args.bandwidth, min_pair_samples=args.min_pair_samples, ao_knobs=args.ao_knobs)
    if args.aux:
        result.info["aux_checkpoint"] = repo_relative(args.aux)
    result.info["engine"] = engine_spec(args).name
    result.info["energy_table"] = table.name or str(args.energy_table)
    result.info.update({"checkpoint": repo_relative(ck.path), "checkpoint_sha256": ck.sha256,
                        "val_source": repo_relative(val.source), "val_samples": len(val),
                        "test_source": repo_relative(test.source), "test_samples": len(test),
                        "command": args.command_line})
    paths = write_outputs(result, args.out)
    for group in table2(result):
        parts = [f"AO knob {group['reference_knob']:g}: overall {100 * group['acc_overall']:.2f}%"]
        for m in group["methods"]:
            kept = "n/a" if m.get("edge_exit_rate") is None else f"{100 * m['edge_exit_rate']:.2f}%"
            gain = "" if m["gain"] is None else f" (AO gain {100 * m['gain']:+.2f}%)"
            parts.append(f"{m['method']} {kept}{gain}")
        print(" | ".join(parts))
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0
