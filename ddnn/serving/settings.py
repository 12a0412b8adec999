"""Typed service settings from ``DDNN_<SERVICE>_*`` environment variables, with CLI overrides.

Each service declares a dataclass; :func:`load_settings` builds an argparse parser from its
fields (``--field-name``), takes defaults from the environment, and fails fast naming the bad
variable or flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from typing import Any, TypeVar

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable or flag."""


def _base_type(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if args else tp


def _convert(raw: str, tp: Any, where: str) -> Any:
    base = _base_type(tp)
    if raw == "" and type(None) in typing.get_args(tp):
        return None
    try:
        if base is bool:
            low = raw.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(f"expected true/false, got {raw!r}")
        if base in (int, float, str):
            return base(raw)
    except ValueError as exc:
        raise SettingsError(f"{where}: {exc}") from None
    raise SettingsError(f"{where}: unsupported setting type {tp}")


def load_settings(cls: type[T], prefix: str, argv: list[str] | None = None, description: str = "") -> T:
    """Build ``cls`` from ``{prefix}_{FIELD}`` env vars, overridden by ``--field`` flags in ``argv``."""
    hints = typing.get_type_hints(cls)
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        env = f"{prefix}_{f.name.upper()}"
        tp = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if env in os.environ:
            default = _convert(os.environ[env], tp, f"environment variable {env}")
        doc = (f.metadata or {}).get("help", "")
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=default,
                            type=lambda raw, tp=tp, name=f.name: _convert(raw, tp, f"--{name.replace('_', '-')}"),
                            help=f"{doc} [env {env}]".strip())
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        if exc.code:
            raise SettingsError("invalid command-line arguments (see the usage above)") from None
        raise
    values = vars(args)
    missing = [f.name for f in dataclasses.fields(cls) if values.get(f.name) is None
               and type(None) not in typing.get_args(hints[f.name])]
    if missing:
        name = missing[0]
        raise SettingsError(f"missing setting: pass --{name.replace('_', '-')} or set {prefix}_{name.upper()}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise SettingsError(str(exc)) from None


def setting(default: Any = dataclasses.MISSING, help: str = "", **kw) -> Any:
    """A dataclass field with a help text for the generated flag."""
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata={"help": help}, **kw)
    return dataclasses.field(default=default, metadata={"help": help}, **kw)
