"""The ``ddnn`` command line: one subcommand per job, each in its own module."""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import shlex
import sys

from ddnn.checkpoint import CheckpointError
from ddnn.data.errors import DatasetError
from ddnn.errors import InvalidInput, NotFound, PolicyError
from ddnn.logs import configure_logging

# Errors printed as one line naming the file, field or flag, without a traceback.
USER_ERRORS = (DatasetError, CheckpointError, PolicyError, InvalidInput, NotFound, ValueError,
               FileNotFoundError, PermissionError)



def command_modules() -> list:
    """Every module in ddnn.cli with a ``register(subparsers)`` function, in name order."""
    mods = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        mod = importlib.import_module(f"{__name__}.{info.name}")
        if callable(getattr(mod, "register", None)):
            mods.append(mod)
    return mods

DESCRIPTION = """\
ddnn: distributed early-exit inference across edge and cloud.

Typical workflow (CIFAR-10, the shipped checkpoint in models/):
  ddnn eval                         # per-exit accuracy, exit rates, MACs, bytes on the test split
  ddnn calibrate --method ao --max-accuracy-loss 0 -o policy.json
  ddnn sweep -o results/sweep       # AO vs CDL vs BranchyNet curves and table
  ddnn train --epochs 30 -o my.pt   # train your own multi-exit ResNet

Run `ddnn COMMAND --help` for the options of each command.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ddnn", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--log-json", action="store_true", help="log as JSON lines")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in command_modules():
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(logging.DEBUG if args.verbose else logging.INFO, json_lines=args.log_json)
    args.command_line = "ddnn " + shlex.join(argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        print(f"ddnn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ddnn {args.command}: interrupted", file=sys.stderr)
        return 130
