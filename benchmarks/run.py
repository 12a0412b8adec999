"""``make bench``: run the benchmarks and rewrite BENCHMARKS.md (``python -m benchmarks.run --help``).

Results are also kept as JSON (benchmarks/results.json) so a section can be re-run alone
(``--only system``) and the report rebuilt with the other sections' last results.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from ddnn.logs import configure_logging
from ddnn.paths import REPO_ROOT

SECTIONS = ("core", "system", "slo", "engines", "training", "compose")
RESULTS = REPO_ROOT / "benchmarks" / "results.json"


def environment() -> dict:
    cpu = ""
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as f:
        cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                            text=True).stdout.strip()
    import torch

    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu, "cores": os.cpu_count(),
            "python": platform.python_version(), "torch": str(torch.__version__), "commit": commit,
            "loadavg_at_start": os.getloadavg()}


def run_section(name: str, quick: bool) -> dict:
    t0 = time.time()
    if name == "core":
        from benchmarks import core

        out = {"eval": core.eval_throughput(n=500 if quick else 2000), "train": core.train_epoch_time(
            steps=5 if quick else 20)}
    elif name == "system":
        from benchmarks import system

        out = system.run(n=256 if quick else 2000, rounds=1 if quick else 2, edge_threads=2)
    elif name == "engines":
        from benchmarks import engines

        out = engines.run(quick=quick)
    elif name == "training":
        from benchmarks import training

        out = training.run(quick=quick)
    elif name == "compose":
        from benchmarks import compose

        out = compose.run(images=2000 if quick else 10_000, rounds=2 if quick else 3)
    else:
        from benchmarks import slo

        out = slo.run(quick=quick)
    out["wall_s"] = round(time.time() - t0, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default=str(REPO_ROOT / "BENCHMARKS.md"))
    p.add_argument("--only", default=",".join(SECTIONS), help=f"sections to run: {', '.join(SECTIONS)}")
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run, not for the report)")
    args = p.parse_args(argv)
    configure_logging()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        p.error(f"--only: unknown section(s) {bad}; choose from {', '.join(SECTIONS)}")
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    command = "make bench" if only == list(SECTIONS) and not args.quick else \
        "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:])
    for name in only:
        print(f"== {name} ...", flush=True)
        results[name] = {"result": run_section(name, args.quick), "environment": environment(), "command": command,
                         "quick": args.quick}
    if not args.quick:
        RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
    from benchmarks.report import render

    Path(args.out).write_text(render(results))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
