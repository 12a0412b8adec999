"""``ddnn eval``: offline evaluation of an exit policy with the papers' metrics."""

from __future__ import annotations

import argparse
import json


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None/False ones, whose help text already says what happens."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def parse_exits(text: str) -> list[str]:
    """Comma-separated exit names, e.g. ``block4,block7``."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected exit names like block7 or block4,block7, got {text!r}")
    return names


def add_engine_argument(p) -> None:
    """``--engine`` and ``--threads``: what computes the logits (see docs/engines.md)."""
    from ddnn.engines import ENGINE_NAMES

    p.add_argument("--engine", choices=ENGINE_NAMES, default="torch",
                   help="engine computing the logits: torch (reference), onnxruntime (the serving default), "
                   "onnxruntime-int8, openvino[-int8|-bf16]; non-torch engines run the checkpoint's ONNX bundle "
                   "(the shipped x.bundle beside x.pt, else exported into the cache)")
    p.add_argument("--threads", type=int, default=0, help="engine CPU threads (0 = the runtime's default)")


def engine_spec(args):
    from ddnn.engines import EngineSpec

    return EngineSpec.parse(args.engine, args.threads)


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate an exit policy offline (accuracies, exit rates, MACs, bytes)",
                       description="Run a checkpoint over a dataset (logits cached), apply an edge policy with "
                       "the edge cascade's semantics and print every metric of the papers: exit rates, "
                       "acc_aux/prin separate/allocate, overall accuracy (Eq. 8), local and ideal accuracy, "
                       "expected MACs and bytes on the link.",
                       formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", default=None, help="checkpoint (default: the shipped models/resnet20w32-cifar10.pt)")
    p.add_argument("--data", default=None, help="dataset: pack, ImageFolder root or CIFAR pickle folder "
                   "(default: $DDNN_TEST_DATA, else the shipped data/cifar10-test.npz)")
    p.add_argument("--split", default="test", choices=["train", "test"], help="which split of --data")
    policy = p.add_mutually_exclusive_group()
    policy.add_argument("--policy", default=None, help="policy JSON (default: the shipped policy beside the "
                        "shipped checkpoint, if present)")
    policy.add_argument("--no-policy", action="store_true", help="cloud only: no edge exits")
    p.add_argument("--exits", type=parse_exits, default=None,
                   help="active edge exits, e.g. block7, or block4,block7 for a cascade (default: the exits the "
                   "policy was calibrated for together; for a policy merged from one fit per depth (--into), the "
                   "deepest, which is what the edge service runs in its normal mode)")
    p.add_argument("--knob", type=float, default=None, help="override the knob of every active exit's criterion")
    p.add_argument("--energy-table", metavar="FILE", default=None,
                   help="per-operation energies, JSON (default: Long et al.'s Table I, "
                        "ddnn/resources/energy_table1.json)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of text")
    p.add_argument("--per-sample", metavar="FILE.csv", help="write sample id, label, exit, prediction, confidence")
    p.add_argument("--no-cache", action="store_true", help="recompute logits instead of using the cache")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_engine_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ddnn.checkpoint import load_checkpoint
    from ddnn.data import load_split
    from ddnn.energy import EnergyTable
    from ddnn.evaluation import evaluate
    from ddnn.paths import SHIPPED_CHECKPOINT, SHIPPED_POLICY, default_test_source
    from ddnn.policies import EdgePolicy

    ck = load_checkpoint(args.checkpoint or SHIPPED_CHECKPOINT)
    policy, policy_file = None, None
    if args.policy:
        policy_file = args.policy
    elif not args.no_policy and args.checkpoint is None and SHIPPED_POLICY.is_file():
        policy_file = str(SHIPPED_POLICY)
    if policy_file:
        policy = EdgePolicy.load(policy_file)
    if args.exits and policy is None:
        raise ValueError("--exits needs a policy: pass --policy FILE (see `ddnn calibrate`)")
    if policy is not None and not args.exits:
        covered = [e for e in ck.exit_names[:-1] if e in policy.criteria]
        fitted = policy.meta.get("exits")
        args.exits = (covered[-1:] if "per_exit" in policy.meta or not fitted else list(fitted)) or None
    if args.knob is not None:
        if policy is None:
            raise ValueError("--knob needs a policy: pass --policy FILE")
        active = args.exits or list(policy.criteria)
        policy = policy.with_knobs({e: args.knob for e in active})
    arrays = load_split(args.data or default_test_source(), args.split)
    table = EnergyTable.load(args.energy_table) if args.energy_table else None  # fail before the forward pass
    report = evaluate(ck, arrays, policy, exits=args.exits, use_cache=not args.no_cache,
                      progress=False if args.no_progress else None, energy_table=table, engine=engine_spec(args))
    if policy_file:
        report.info["policy_file"] = policy_file
    if args.per_sample:
        report.write_per_sample_csv(args.per_sample)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    return 0
