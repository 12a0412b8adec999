"""``ddnn demo``: the three-node system on loopback, replaying the CIFAR-10 test split.

Starts the cloud service (which exports the checkpoint's deep segments to a Triton model
repository and starts Triton on it), the edge service and the load generator as separate
processes on ephemeral loopback ports, prints the load generator's report, then shuts
everything down with SIGTERM (graceful drain) and checks every process exited cleanly.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from ddnn.codec import PAYLOADS, Payload
from ddnn.export.bundle import MODES, Mode
from ddnn.paths import REPO_ROOT, SHIPPED_CHECKPOINT, SHIPPED_INT8_POLICY, SHIPPED_POLICY, SHIPPED_VAL_PACK


def edge_choice(engine: str = "auto", policy: str = "") -> tuple[str, str, str]:
    """The edge engine the demo runs (``auto``: :func:`~ddnn.evaluation.engine_choice.choose_engine`, measured on
    this machine's kernels), why, and its policy (given, or the shipped one calibrated
    for the engine's precision). make bench's compose section runs the same."""
    if engine == "auto":
        from ddnn.evaluation.engine_choice import choose_engine

        choice = choose_engine(SHIPPED_CHECKPOINT, SHIPPED_POLICY, SHIPPED_INT8_POLICY, SHIPPED_VAL_PACK)
        engine, why = choice.engine, choice.why
    else:
        why = "chosen"
    return engine, why, policy or str(SHIPPED_INT8_POLICY if engine.endswith("-int8") else SHIPPED_POLICY)


def register(sub) -> None:
    p = sub.add_parser("demo", help="run edge + cloud (Triton) + load generator on loopback and print the report",
                       description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=str(SHIPPED_CHECKPOINT))
    p.add_argument("--policy", default="", help="exit policy JSON (default: the shipped one calibrated for the "
                   "engine's precision)")
    from ddnn.engines import ENGINE_NAMES

    p.add_argument("--engine", choices=["auto", *ENGINE_NAMES], default="auto",
                   help="edge engine; auto: the fastest within 0.3 pt of fp32's overall validation accuracy, measured "
                   "on this CPU (onnxruntime-int8 where its kernels keep the accuracy, else onnxruntime)")
    p.add_argument("--data", default="", help="test images (default: the shipped CIFAR-10 test pack)")
    p.add_argument("--limit", type=int, default=0, help="replay only the first N images (0 = all 10,000)")
    p.add_argument("--backend", choices=["triton", "onnxruntime", "torch"], default="triton", help="cloud backend")
    p.add_argument("--mode", choices=MODES, default=Mode.NORMAL.value, help="edge mode")
    p.add_argument("--payload", choices=PAYLOADS, default=Payload.FP32.value)
    p.add_argument("--concurrency", type=int, default=2, help="load generator streams (closed loop)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", default="", help="results folder (default: results/demo-<time>)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ddnn.launch import start

    out = Path(args.out) if args.out else REPO_ROOT / "results" / f"demo-{datetime.now():%Y%m%d-%H%M%S}"
    logs = out / "logs"
    if args.engine == "auto":
        print("choosing the edge engine: int8 vs fp32 on this CPU's kernels, over the shipped validation images "
              "(cached after the first run) ...", flush=True)
    engine, why, policy = edge_choice(args.engine, args.policy)
    print(f"edge engine: {engine} ({why}); policy {Path(policy).name}", flush=True)
    for path, what in ((args.checkpoint, "--checkpoint"), (policy, "--policy")):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{what} {path}: no such file")
    services = []
    t0 = time.monotonic()
    try:
        print(f"starting cloud ({args.backend} backend) ...", flush=True)
        cloud = start("services.cloud", ["--checkpoint", args.checkpoint, "--backend", args.backend,
                                         "--listen", "127.0.0.1:0", "--metrics-port", "0"], logs, timeout=300)
        services.append(cloud)
        print(f"  cloud  grpc {cloud.grpc}  metrics {cloud.metrics}", flush=True)
        edge = start("services.edge", ["--checkpoint", args.checkpoint, "--policy", policy, "--cloud", cloud.grpc,
                                       "--listen", "127.0.0.1:0", "--metrics-port", "0", "--mode", args.mode,
                                       "--payload", args.payload, "--engine", engine], logs, timeout=120)
        services.append(edge)
        print(f"  edge   grpc {edge.grpc}  metrics {edge.metrics}", flush=True)
        print(f"services up in {time.monotonic() - t0:.1f}s; replaying ...", flush=True)
        cmd = [sys.executable, "-m", "services.loadgen", "--edge", edge.grpc, "--out", str(out), "--metrics-port", "-1",
               "--concurrency", str(args.concurrency), "--batch-size", str(args.batch_size)]
        if args.limit:
            cmd += ["--limit", str(args.limit)]
        if args.data:
            cmd += ["--data", args.data]
        rc = subprocess.run(cmd, cwd=REPO_ROOT).returncode
    except RuntimeError as exc:  # a service did not come up: its log tail says why
        print(f"ddnn demo: error: {exc}", file=sys.stderr)
        rc = 1
    finally:
        codes = {s.name: s.stop() for s in reversed(services)}
    clean = all(c == 0 for c in codes.values())
    print(f"\nshut down: {', '.join(f'{k} exit {v}' for k, v in codes.items())}"
          f"{'' if clean else '  (NOT clean: see ' + str(logs) + ')'}; logs in {logs}")
    return rc if rc else (0 if clean else 1)
