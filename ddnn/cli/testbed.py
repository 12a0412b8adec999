"""``ddnn testbed`` (also ``python -m ddnn.testbed``, ``make testbed``): the three-host netem testbed."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ddnn.testbed.runner import RunConfig

DESCRIPTION = """\
Load generator, edge and cloud in three network namespaces joined by veth links; link profiles
(tc netem, or tbf + an nfqueue delayer where the kernel lacks netem) on the edge<->cloud link.
(a) Per profile: closed-loop replays with the edge in ws, normal and auto mode: mode chosen, exit
rates, accuracy, latency and bytes (Lo et al. Table III on an emulated link). (b) One open-loop auto
run while the profile follows --schedule: effective mode over time, every sample answered once.
Writes report.json, report.md and timeline.png to --out and prints the Markdown. Needs root.
With --compose PROJECT the same runs use the docker compose testbed's containers instead of
namespaces: the profiles shape the edge<->cloud "backhaul" network between the edge and cloud
containers (see docs/deployment.md).
"""


def _csv(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return items


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ddnn.testbed.runner import QUICK, RunConfig
    from ddnn.testbed.shaper import SHAPERS

    d = RunConfig(out=Path())  # only its defaults are read
    p.add_argument("--quick", action="store_true",
                   help=f"short CI run: {', '.join(f'{k}={v}' for k, v in QUICK.items())} (explicit flags win)")
    p.add_argument("--out", default="", help="output folder (default: results/testbed-<time>)")
    p.add_argument("--profiles", type=_csv, default=None, help=f"profiles for the per-profile table "
                   f"(default: {','.join(d.profiles)})")
    p.add_argument("--modes", type=_csv, default=None, help=f"edge modes per profile (default: {','.join(d.modes)})")
    p.add_argument("--schedule", default=None, help=f"timeline run, PROFILE:SECONDS,... (default: {d.schedule})")
    p.add_argument("--limit", type=int, default=None, help=f"images per replay in the table (default: {d.limit})")
    p.add_argument("--concurrency", type=int, default=None, help=f"load generator streams (default: {d.concurrency})")
    p.add_argument("--rate", type=float, default=None, help=f"timeline: batches per second (default: {d.rate:g})")
    p.add_argument("--profiles-file", default=None, help="link profiles JSON (default: ddnn/testbed/profiles.json)")
    p.add_argument("--shaper", choices=SHAPERS, default=None, help="netem, nfqueue (tbf + user-space delayer, for "
                   "kernels without sch_netem) or auto (default: auto)")
    p.add_argument("--backend", choices=["torch", "triton"], default=None, help="cloud backend (default: torch)")
    p.add_argument("--checkpoint", default=None, help="checkpoint (default: the shipped one)")
    p.add_argument("--policy", default=None, help="edge policy covering every edge exit "
                   "(default: ddnn/testbed/policy.json)")
    p.add_argument("--torch-threads", type=int, default=None, help="intra-op threads of edge and cloud (default: 1)")
    p.add_argument("--poll-s", type=float, default=None, help="status poll interval (default: 0.25)")
    p.add_argument("--no-table", action="store_true", help="skip the per-profile replays")
    p.add_argument("--no-timeline", action="store_true", help="skip the continuous auto run")
    p.add_argument("--edge-arg", action="append", default=[], metavar="ARG",
                   help="extra edge flag, repeatable (e.g. --edge-arg=--cloud-timeout-s --edge-arg=3)")
    p.add_argument("--cloud-arg", action="append", default=[], metavar="ARG", help="extra cloud flag, repeatable")
    p.add_argument("--compose", default=None, metavar="PROJECT",
                   help="run on a running docker compose testbed (docker compose -p PROJECT up) instead: shape the "
                        "link between its edge and cloud containers; --backend, --checkpoint, --policy and the "
                        "extra service flags do not apply (compose configured the services)")


def config_from_args(args) -> RunConfig:
    from ddnn.paths import REPO_ROOT
    from ddnn.testbed.runner import QUICK, RunConfig

    out = args.out or REPO_ROOT / "results" / f"testbed-{datetime.now():%Y%m%d-%H%M%S}"
    values: dict[str, Any] = dict(QUICK) if args.quick else {}
    for f in dataclasses.fields(RunConfig):
        v = getattr(args, f.name, None)
        if v is not None and f.name not in ("out", "edge_args", "cloud_args", "command", "table", "timeline"):
            values[f.name] = v
    return RunConfig(out=out, table=not args.no_table, timeline=not args.no_timeline, edge_args=args.edge_arg,
                     cloud_args=args.cloud_arg, command=getattr(args, "command_line", ""), **values)


def register(sub) -> None:
    p = sub.add_parser("testbed", help="three namespaces + netem link profiles: WS vs normal vs auto, mode over time "
                       "(root)", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ddnn.testbed.report import markdown
    from ddnn.testbed.runner import Run
    from ddnn.testbed.topology import TestbedError

    cfg = config_from_args(args)
    try:
        if cfg.compose:
            from ddnn.testbed.compose import ComposeRun

            rep = ComposeRun(cfg).execute()
        else:
            rep = Run(cfg).execute()
    except TestbedError as exc:
        print(f"ddnn testbed: error: {exc}", file=sys.stderr)
        return 2
    print(markdown(rep))
    print(f"\nreport: {cfg.out}/report.md, report.json, timeline.png; logs in {cfg.out}/logs")
    return 0 if all(c["ok"] for c in rep["checks"].values()) else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m ddnn.testbed``."""
    import logging

    from ddnn.logs import configure_logging

    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m ddnn.testbed", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_arguments(p)
    args = p.parse_args(argv)
    configure_logging(logging.DEBUG if args.verbose else logging.INFO)
    args.command_line = "python -m ddnn.testbed " + shlex.join(argv)
    try:
        return run(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"ddnn testbed: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ddnn testbed: interrupted (testbed removed)", file=sys.stderr)
        return 130
