"""``ddnn calibrate``: fit an edge policy on the validation split to a target."""

from __future__ import annotations

import argparse
import json

from ddnn.cli.eval import HelpFormatter, add_engine_argument, engine_spec, parse_exits


def fraction(text: str) -> float:
    """A fraction in [0, 1], e.g. 0.9 for 90%."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction like 0.9, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1] (0.9 means 90%), got {text!r}")
    return value


def register(sub) -> None:
    from ddnn.calibration import METHODS
    from ddnn.policies.ao_margin import DEFAULT_BANDWIDTH, DEFAULT_MIN_PAIR_SAMPLES

    p = sub.add_parser("calibrate", help="fit an exit policy on the validation split to a target",
                       description="Fit an edge exit policy (AO, CDL, BranchyNet entropy or normalized entropy) "
                       "on the checkpoint's validation split, rebuilt from the split recorded in the checkpoint "
                       "(never the test split), so that it meets a target: an overall accuracy, an edge exit "
                       "rate, or an accuracy-loss budget against cloud-only inference. One knob value is shared "
                       "by all active edge exits. Writes the policy as JSON.",
                       formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", default=None, help="checkpoint (default: the shipped models/resnet20w32-cifar10.pt)")
    p.add_argument("--data", default=None, help="the checkpoint's training data, for its validation split "
                   "(default: the source recorded in the checkpoint, else $DDNN_TRAIN_DATA or "
                   "../shared/datasets/cifar10-jpeg)")
    p.add_argument("--method", choices=sorted(METHODS), default="ao",
                   help="ao: Lo et al. KDE margins; cdl: max softmax; entropy: BranchyNet; "
                   "normalized-entropy: DDNN / Lee et al.")
    p.add_argument("--exits", type=parse_exits, default=None,
                   help="edge exits, e.g. block7 or block4,block7 for a cascade (default: the deepest edge exit)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--target-accuracy", type=fraction, metavar="FRACTION",
                        help="overall accuracy to reach, e.g. 0.88; keeps as many samples at the edge as allows")
    target.add_argument("--target-exit-rate", type=fraction, metavar="FRACTION",
                        help="share of samples to answer at the edge, e.g. 0.8")
    target.add_argument("--max-accuracy-loss", type=fraction, metavar="FRACTION",
                        help="accuracy below cloud-only inference you accept, e.g. 0.01 for one point")
    p.add_argument("--drop-threshold", type=float, default=None,
                   help="drop samples whose normalized entropy at the last edge exit exceeds this (0, 1]")
    p.add_argument("--bandwidth", type=float, default=DEFAULT_BANDWIDTH, help="AO: Gaussian KDE bandwidth")
    p.add_argument("--min-pair-samples", type=int, default=DEFAULT_MIN_PAIR_SAMPLES,
                   help="AO: fewest validation samples for a pair-wise threshold (else the class threshold)")
    p.add_argument("--no-pairs", action="store_true", help="AO: per-class thresholds only (Eq. 7)")
    p.add_argument("-o", "--out", default="policy.json", help="policy JSON to write")
    p.add_argument("--into", metavar="POLICY.json",
                   help="merge the fitted exits into this existing policy (e.g. add the ws exit to a policy "
                   "fitted for the normal exit); its other exits, drop rule and meta are kept")
    p.add_argument("--json", action="store_true", help="print the validation summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_engine_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ddnn.calibration import Target, calibrate_checkpoint
    from ddnn.checkpoint import load_checkpoint
    from ddnn.paths import SHIPPED_CHECKPOINT

    if args.target_accuracy is not None:
        target = Target("accuracy", args.target_accuracy)
    elif args.target_exit_rate is not None:
        target = Target("exit_rate", args.target_exit_rate)
    else:
        target = Target("accuracy_loss", args.max_accuracy_loss)
    if args.drop_threshold is not None and not 0.0 < args.drop_threshold <= 1.0:
        raise ValueError(f"--drop-threshold must be in (0, 1], got {args.drop_threshold}")
    if not 0.0 < args.bandwidth <= 1.0:
        raise ValueError(f"--bandwidth must be in (0, 1], got {args.bandwidth}")
    if args.min_pair_samples < 1:
        raise ValueError(f"--min-pair-samples must be >= 1, got {args.min_pair_samples}")
    ck = load_checkpoint(args.checkpoint or SHIPPED_CHECKPOINT)
    result = calibrate_checkpoint(ck, args.method, target, exits=args.exits, data=args.data,
                                  drop_threshold=args.drop_threshold, bandwidth=args.bandwidth,
                                  min_pair_samples=args.min_pair_samples, pairwise=not args.no_pairs,
                                  command=args.command_line, progress=False if args.no_progress else None,
                                  engine=engine_spec(args))
    policy = result.policy
    if args.into:
        from ddnn.engines import policy_engine
        from ddnn.policies import EdgePolicy

        base = EdgePolicy.load(args.into)
        if policy_engine(base.meta).name != policy_engine(policy.meta).name:
            raise ValueError(f"--into {args.into} was calibrated for engine {policy_engine(base.meta).name}, this "
                             f"fit for {policy_engine(policy.meta).name}: one policy serves one engine")
        # Each exit keeps the record of how it was fitted (method, target, command).
        per_exit = dict(base.meta.get("per_exit") or {e: base.meta for e in base.criteria})
        per_exit.update({e: policy.meta for e in policy.criteria})
        policy = EdgePolicy({**base.criteria, **policy.criteria}, policy.drop or base.drop,
                            {**base.meta, "per_exit": per_exit})
    path = policy.save(args.out)
    v = result.validation
    if args.json:
        print(json.dumps({"policy": str(path), "knob": result.knob, "exits": result.policy.meta["exits"],
                          "validation": v}, indent=2))
        return 0
    rates = ", ".join(f"{k} {100 * r:.2f}%" for k, r in v["exit_rate"].items())
    print(f"wrote {path}")
    print(f"engine {engine_spec(args).name}")
    print(f"method {args.method} on {', '.join(result.policy.meta['exits'])}: knob {result.knob:.6g}")
    print(f"validation ({v['samples']} samples): overall accuracy {100 * v['acc_overall']:.2f}% "
          f"(cloud only {100 * v['cloud_only_accuracy']:.2f}%), edge exit rate {100 * v['edge_exit_rate']:.2f}%")
    print(f"exit rates: {rates}")
    return 0
