"""``ddnn train``: train a multi-exit network (joint or separate optimization).

The flags come from :class:`ddnn.training.TrainConfig` (see :mod:`ddnn.training.cli_args`); only
the options that are not training settings (``--hybrid``, ``--no-progress``) are declared here.
"""

from __future__ import annotations

from ddnn.training.cli_args import add_config_arguments, config_from_args, parse_ints, parse_weights

__all__ = ["parse_ints", "parse_weights", "register", "run"]


def register(sub) -> None:
    p = sub.add_parser("train", help="train a multi-exit CNN",
                       description="Train a multi-exit CNN on CIFAR. Joint optimization sums the "
                       "per-exit cross-entropy losses weighted by lambda_k; separate optimization "
                       "freezes a trained backbone (--init) and trains only the exit heads. "
                       "--recipe fast trains the compact (airbench-style) network in minutes on a CPU.")
    add_config_arguments(p)
    p.add_argument("--hybrid", metavar="XE+YC",
                   help="Long et al. hybrid split of the ResNet's block convolutions, e.g. 16E+14C for ResNet-32: "
                   "quantize the first X/2 blocks to --quant-bits and put the edge exit after block X/2 "
                   "(overrides --quant-blocks and --exits)")
    p.add_argument("--hybrid-exits", type=int, default=1,
                   help="with --hybrid: edge exits evenly spread over the edge, the last at its end (0 = none)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def apply_hybrid(cfg, hybrid: str, hybrid_exits: int):
    """The config with ``--hybrid XE+YC`` resolved into ``quant_blocks`` and ``exits``."""
    from ddnn.models.hybrid import check_fits, parse_hybrid

    if cfg.arch != "resnet":
        raise ValueError("--hybrid needs --arch resnet (the xE+yC splits count residual block convolutions)")
    if not cfg.quant_bits:
        raise ValueError("--hybrid needs --quant-bits (1, 2, 4 or 8) for the edge blocks")
    config = parse_hybrid(hybrid)
    check_fits(config, cfg.depth)
    return cfg.replace(quant_blocks=config.edge_blocks, exits=config.exits(hybrid_exits))


def run(args) -> int:
    from ddnn.training import train

    cfg = config_from_args(args)
    if getattr(args, "hybrid", None):
        cfg = apply_hybrid(cfg, args.hybrid, args.hybrid_exits)
    path = train(cfg, command=args.command_line, progress=False if args.no_progress else None)
    print(path)
    return 0
