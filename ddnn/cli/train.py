"""``ddnn train``: train a multi-exit network (joint or separate optimization).

The flags come from :class:`ddnn.training.TrainConfig` (see :mod:`ddnn.training.cli_args`).
"""

from __future__ import annotations

from ddnn.training.cli_args import add_train_arguments, apply_hybrid, config_from_args

__all__ = ["apply_hybrid", "register", "run"]  # apply_hybrid: kept importable from here for existing callers


def register(sub) -> None:
    p = sub.add_parser("train", help="train a multi-exit CNN",
                       description="Train a multi-exit CNN on CIFAR. Joint optimization sums the "
                       "per-exit cross-entropy losses weighted by lambda_k; separate optimization "
                       "freezes a trained backbone (--init) and trains only the exit heads. "
                       "--recipe fast trains the compact (airbench-style) network in minutes on a CPU.")
    add_train_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ddnn.training import train

    cfg = config_from_args(args)
    path = train(cfg, command=args.command_line, progress=False if args.no_progress else None)
    print(path)
    return 0
