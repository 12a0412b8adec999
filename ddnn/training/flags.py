"""The ``ddnn train`` flags, owned by the training library.

A training run is recorded in its checkpoint (and in the papers' reports) as the ``ddnn train``
command that made it, so the flag vocabulary belongs to the library: the CLI adds these flags to
its parser, and ``ddnn.experiments`` turns the flags it records into a :class:`TrainConfig`
through :func:`config_from_argv` without going through the command line.
"""

from __future__ import annotations

import argparse

from ddnn.training.config import TrainConfig


def parse_ints(text: str) -> tuple[int, ...]:
    """``--exits``: comma-separated block numbers ('' for none)."""
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated block numbers, got {text!r}") from None


def parse_weights(text: str) -> dict[str, float]:
    """``--loss-weights``: EXIT=WEIGHT pairs."""
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected EXIT=WEIGHT pairs like block7=0.3,final=1, got {item!r}") from None
    return out


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Every ``ddnn train`` flag, on ``p``."""
    p.add_argument("-o", "--out", default="models/model.pt", help="checkpoint to write")
    p.add_argument("--data", help="training data: ImageFolder root, CIFAR pickle folder or pack "
                   "(default: $DDNN_TRAIN_DATA, else ../shared/datasets/cifar10-jpeg)")
    p.add_argument("--arch", choices=["resnet", "plain"], default="resnet")
    p.add_argument("--depth", type=int, default=32, help="ResNet depth (6n+2)")
    p.add_argument("--exits", type=parse_ints, default=(7, 12),
                   help="blocks after which to attach early exits, e.g. 7,12 ('' for none)")
    p.add_argument("--exit-pool", type=int, default=4, help="average-pool kernel of each exit")
    p.add_argument("--width", type=int, default=0, help="first-stage channels (0 = arch default)")
    p.add_argument("--quant-bits", type=int, choices=[1, 2, 4, 8], help="quantize edge blocks to this many bits")
    p.add_argument("--quant-blocks", type=int, default=0, help="how many leading blocks are quantized")
    p.add_argument("--hybrid", metavar="XE+YC",
                   help="Long et al. hybrid split of the ResNet's block convolutions, e.g. 16E+14C for ResNet-32: "
                   "quantize the first X/2 blocks to --quant-bits and put the edge exit after block X/2 "
                   "(overrides --quant-blocks and --exits)")
    p.add_argument("--hybrid-exits", type=int, default=1,
                   help="with --hybrid: edge exits evenly spread over the edge, the last at its end (0 = none)")
    p.add_argument("--mode", choices=["joint", "separate"], default="joint")
    p.add_argument("--init", help="checkpoint to start from (required for --mode separate)")
    p.add_argument("--loss-weights", type=parse_weights, default={},
                   help="lambda_k per exit, e.g. block7=0.3,block12=0.3,final=1.0")
    p.add_argument("--default-exit-weight", type=float, default=0.5, help="lambda for early exits not named")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate (cosine schedule)")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--val-fraction", type=float, default=0.1, help="held out for validation/calibration")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the train/validation split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, help="use only this many training images (smoke tests)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="disable bf16 autocast on CUDA")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="keep NCHW memory format on CUDA")
    p.add_argument("--eval-every", type=int, default=1, help="validate every N epochs")
    p.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="choose the epoch count (at most --epochs) after epoch 1 to finish in about this "
                   "long; the checkpoint records the count, so --epochs N replays the run")
    p.add_argument("--resume", action="store_true", help="continue from OUT.state if present")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def apply_hybrid(args) -> None:
    """Resolve ``--hybrid XE+YC`` into ``quant_blocks`` and ``exits`` (in place)."""
    from ddnn.models.hybrid import check_fits, parse_hybrid

    if args.arch != "resnet":
        raise ValueError("--hybrid needs --arch resnet (the xE+yC splits count residual block convolutions)")
    if not args.quant_bits:
        raise ValueError("--hybrid needs --quant-bits (1, 2, 4 or 8) for the edge blocks")
    config = parse_hybrid(args.hybrid)
    check_fits(config, args.depth)
    args.quant_blocks = config.edge_blocks
    args.exits = config.exits(args.hybrid_exits)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of parsed ``ddnn train`` flags (``--hybrid`` resolved first)."""
    if getattr(args, "hybrid", None):
        apply_hybrid(args)
    return TrainConfig(
        out=args.out, data=args.data, arch=args.arch, depth=args.depth, exits=args.exits,
        exit_pool=args.exit_pool, width=args.width, quant_bits=args.quant_bits,
        quant_blocks=args.quant_blocks, mode=args.mode, init=args.init, loss_weights=args.loss_weights,
        default_exit_weight=args.default_exit_weight, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs,
        label_smoothing=args.label_smoothing, val_fraction=args.val_fraction, split_seed=args.split_seed,
        seed=args.seed, limit=args.limit, device=args.device, amp=args.amp, channels_last=args.channels_last,
        eval_every=args.eval_every, time_budget=args.time_budget, resume=args.resume,
    )


def config_from_argv(argv: list[str]) -> TrainConfig:
    """The :class:`TrainConfig` of ``ddnn train`` flags given as a list (without the ``train`` word)."""
    parser = argparse.ArgumentParser(prog="ddnn train")
    add_train_arguments(parser)
    return config_from_args(parser.parse_args(argv))
