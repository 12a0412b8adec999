"""``ddnn train``'s flags, generated from :class:`TrainConfig`'s fields (one source of truth).

Every field becomes ``--field-name`` with the field's help; booleans get ``--x/--no-x``; optional
fields accept their type; ``parse`` metadata names a text format (``ints``: ``7,12``; ``weights``:
``block7=0.3,final=1``). Flags default to "not given" so a ``--recipe`` can supply the defaults and
an explicit flag still wins; :func:`config_from_args` builds the config from what was given.
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
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
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


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    return TrainConfig.from_recipe(args.recipe, **given)
