"""``ddnn train``'s flags, generated from :class:`TrainConfig`'s fields (one source of truth).

It lives in the library, not the CLI, because ``ddnn.experiments`` records each run as the
``ddnn train`` command that makes it and turns that command into a config here. Every field
becomes ``--field-name`` with the field's help; booleans get ``--x/--no-x``; optional fields
accept their type; ``parse`` metadata names a text format (``ints``: ``7,12``; ``weights``:
``block7=0.3,final=1``). Flags default to "not given" so a ``--recipe`` can supply the defaults
and an explicit flag still wins; :func:`config_from_args` builds the config from what was given.
"""

from __future__ import annotations

import argparse
import types
import typing
from dataclasses import MISSING, fields

from ddnn.training.config import RECIPES, TrainConfig


def parse_ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated block numbers, got {text!r}") from None


def parse_weights(text: str) -> dict[str, float]:
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


PARSERS = {"ints": parse_ints, "weights": parse_weights}


def _base_type(tp):
    """``int | None`` -> int; ``str`` -> str."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0]
    return tp


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, defaulting to 'not given' (argparse.SUPPRESS)."""
    hints = typing.get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        meta = dict(f.metadata)
        # (a field without a default has a default_factory, which typeshed's Field cannot say)
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[operator]
        help_text = f"{meta.get('help', '')} (default: {default!r}, or the recipe's)"
        names = [flag(f.name)] + ([meta["short"]] if "short" in meta else [])
        kw: dict = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        tp = _base_type(hints[f.name])
        if tp is bool:
            parser.add_argument(*names, action=argparse.BooleanOptionalAction, **kw)
            continue
        if "parse" in meta:
            kw["type"] = PARSERS[meta["parse"]]
        elif tp in (int, float, str):
            kw["type"] = tp
        if "choices" in meta:
            kw["choices"] = meta["choices"]
        if "metavar" in meta:
            kw["metavar"] = meta["metavar"]
        parser.add_argument(*names, **kw)
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="classic",
                        help="named defaults: classic (SGD + cosine, as the shipped ResNet) or fast "
                        "(the airbench-style recipe on the compact network); explicit flags win")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Every ``ddnn train`` flag: the config's, plus ``--hybrid`` and ``--no-progress``."""
    add_config_arguments(parser)
    parser.add_argument("--hybrid", metavar="XE+YC",
                        help="Long et al. hybrid split of the ResNet's block convolutions, e.g. 16E+14C for "
                        "ResNet-32: quantize the first X/2 blocks to --quant-bits and put the edge exit after "
                        "block X/2 (overrides --quant-blocks and --exits)")
    parser.add_argument("--hybrid-exits", type=int, default=1,
                        help="with --hybrid: edge exits evenly spread over the edge, the last at its end (0 = none)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def apply_hybrid(cfg: TrainConfig, hybrid: str, hybrid_exits: int) -> TrainConfig:
    """The config with ``--hybrid XE+YC`` resolved into ``quant_blocks`` and ``exits``."""
    from ddnn.models.hybrid import check_fits, parse_hybrid

    if cfg.arch != "resnet":
        raise ValueError("--hybrid needs --arch resnet (the xE+yC splits count residual block convolutions)")
    if not cfg.quant_bits:
        raise ValueError("--hybrid needs --quant-bits (1, 2, 4 or 8) for the edge blocks")
    config = parse_hybrid(hybrid)
    check_fits(config, cfg.depth)
    return cfg.replace(quant_blocks=config.edge_blocks, exits=config.exits(hybrid_exits))


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of parsed ``ddnn train`` flags: the recipe's defaults, the flags given
    on top, ``--hybrid`` resolved last."""
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    cfg = TrainConfig.from_recipe(getattr(args, "recipe", "classic"), **given)
    if getattr(args, "hybrid", None):
        cfg = apply_hybrid(cfg, args.hybrid, args.hybrid_exits)
    return cfg


def config_from_argv(argv: list[str]) -> TrainConfig:
    """The :class:`TrainConfig` of ``ddnn train`` flags given as a list (without the ``train`` word):
    how ``ddnn.experiments`` turns the command it records into a config without the CLI."""
    parser = argparse.ArgumentParser(prog="ddnn train")
    add_train_arguments(parser)
    return config_from_args(parser.parse_args(argv))
