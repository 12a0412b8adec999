"""Triton round trip vs in-process compute for one batch, so link overhead = round trip - compute.

``OMP_WAIT_POLICY=PASSIVE python -m ddnn.triton.bench [--splits block7,input] [--batch 32] [--iters 30]
[--json out.json]``
exports the checkpoint's split points to a temporary repository, starts the wheel's tritonserver
and times, per split point, sequential ``TritonClient.infer`` calls against the in-process
``CloudPart`` on the same batch with the same thread count, with the tensor in the gRPC message
and in system shared memory, interleaved call by call, plus Triton's own per-execution queue and
compute times (its statistics API). Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddnn.checkpoint import load_checkpoint
from ddnn.data import IMAGE_SHAPE, read_pack, to_tensor
from ddnn.models import cloud_part, split_at
from ddnn.paths import SHIPPED_CHECKPOINT, SHIPPED_TEST_PACK
from ddnn.triton.client import TritonClient
from ddnn.triton.repository import ExportOptions, export_repository
from ddnn.triton.runtime import default_threads
from ddnn.triton.server import TritonServer


def _summary(seconds: list[float]) -> dict:
    ms = sorted(s * 1e3 for s in seconds)
    return {"median_ms": statistics.median(ms), "mean_ms": statistics.fmean(ms),
            "p90_ms": ms[int(0.9 * (len(ms) - 1))], "min_ms": ms[0], "n": len(ms)}


def _triton_stats(client: TritonClient, model: str) -> dict:
    s = client._client.get_inference_statistics(model).model_stats[0]
    st = s.inference_stats
    return {"executions": s.execution_count, "inferences": s.inference_count,
            **{f"{k}_ns": getattr(st, k).ns for k in ("success", "queue", "compute_input", "compute_infer",
                                                     "compute_output")}}


def _per_execution_ms(before: dict, after: dict) -> dict:
    n = max(1, after["executions"] - before["executions"])
    return {k.removesuffix("_ns") + "_ms": (after[k] - before[k]) / n / 1e6
            for k in ("success_ns", "queue_ns", "compute_input_ns", "compute_infer_ns", "compute_output_ns")}


def measure(checkpoint: str | Path = SHIPPED_CHECKPOINT, splits: tuple[str, ...] = ("block7", "input"),
            batch: int = 32, iters: int = 30, warmup: int = 3, shm_bytes: int = 16 << 20) -> dict:
    """Per split point: Triton round trip, Triton-side times and in-process compute (milliseconds)."""
    ck = load_checkpoint(checkpoint)
    if SHIPPED_TEST_PACK.is_file():
        images = np.ascontiguousarray(read_pack(SHIPPED_TEST_PACK).images[:: 10000 // batch][:batch])
    else:
        images = np.random.default_rng(0).integers(0, 256, (batch, *IMAGE_SHAPE), dtype=np.uint8)
    threads = default_threads(1)  # what each Triton instance uses with the exported defaults
    results: dict[str, Any] = {"checkpoint": str(checkpoint), "batch": batch, "iters": iters, "torch_threads": threads,
               # Triton's stubs get PASSIVE unless it is set (see stub_environment); set it for this
               # process too, before torch is imported, for a like-for-like in-process baseline.
               "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset (active spinning)"),
               "cpu_count": os.cpu_count(), "load_average": list(os.getloadavg()), "splits": {}}
    with tempfile.TemporaryDirectory(prefix="ddnn-bench-repo-") as repo:
        manifest = export_repository(ck, repo, list(splits), ExportOptions())
        torch.set_num_threads(threads)
        with TritonServer(repo, http_port=None, metrics_port=None, shm_bytes=shm_bytes) as server, \
                TritonClient(server.url, timeout_s=60) as client, \
                TritonClient(server.url, timeout_s=60, shared_memory=True) as shm_client:
            for split in splits:
                info = manifest.model_for(split)
                cloud = cloud_part(ck.model, info.position)
                with torch.inference_mode():
                    x = images if split == "input" else split_at(ck.model, split).edge(to_tensor(images))[1].numpy()
                    xt = torch.from_numpy(x)
                    for _ in range(warmup):
                        client.infer(info.model, x)
                        shm_client.infer(info.model, x)
                        cloud(xt)
                    before = _triton_stats(client, info.model)
                    rtt, rtt_shm, compute = [], [], []
                    for _ in range(iters):  # interleaved, so load from elsewhere hits all three alike
                        t0 = time.perf_counter()
                        client.infer(info.model, x)
                        t1 = time.perf_counter()
                        shm_client.infer(info.model, x)
                        t2 = time.perf_counter()
                        cloud(xt)
                        t3 = time.perf_counter()
                        rtt.append(t1 - t0)
                        rtt_shm.append(t2 - t1)
                        compute.append(t3 - t2)
                    after = _triton_stats(client, info.model)
                inside = _per_execution_ms(before, after)
                entry: dict[str, Any] = {
                    "model": info.model, "request_bytes": x.nbytes, "in_process_compute": _summary(compute),
                    "triton_round_trip": _summary(rtt), "triton_round_trip_shm": _summary(rtt_shm),
                    "triton_per_execution": inside}
                compute_ms = entry["in_process_compute"]["median_ms"]
                entry["link_overhead_median_ms"] = entry["triton_round_trip"]["median_ms"] - compute_ms
                entry["link_overhead_shm_median_ms"] = entry["triton_round_trip_shm"]["median_ms"] - compute_ms
                # Same calls, Triton's own clock: what each path adds beyond Triton's compute.
                entry["transport_mean_ms"] = entry["triton_round_trip"]["mean_ms"] - inside["compute_infer_ms"]
                entry["transport_shm_mean_ms"] = entry["triton_round_trip_shm"]["mean_ms"] - inside["compute_infer_ms"]
                results["splits"][split] = entry
    return results


def format_table(results: dict) -> str:
    rows = [f"batch {results['batch']}, {results['iters']} calls per path, interleaved, "
            f"{results['torch_threads']} torch threads, OMP_WAIT_POLICY {results['omp_wait_policy']}, "
            f"load average {results['load_average'][0]:.1f} (medians, ms)",
            f"{'split':7} {'bytes':>8} {'compute':>8} {'rt grpc':>8} {'rt shm':>8} {'triton':>8} "
            f"{'ovh grpc':>9} {'ovh shm':>8} {'tr grpc':>8} {'tr shm':>7}"]
    for split, e in results["splits"].items():
        rows.append(f"{split:7} {e['request_bytes']:>8} {e['in_process_compute']['median_ms']:>8.2f} "
                    f"{e['triton_round_trip']['median_ms']:>8.2f} {e['triton_round_trip_shm']['median_ms']:>8.2f} "
                    f"{e['triton_per_execution']['compute_infer_ms']:>8.2f} {e['link_overhead_median_ms']:>9.2f} "
                    f"{e['link_overhead_shm_median_ms']:>8.2f} {e['transport_mean_ms']:>8.2f} "
                    f"{e['transport_shm_mean_ms']:>7.2f}")
    rows.append("compute: in-process CloudPart; rt: Triton round trip (tensor in the gRPC message / in shared\n"
                "memory); triton: Triton's compute_infer (mean); ovh = rt - compute (medians); tr = rt - triton\n"
                "(means of the same calls: transport and Triton's own handling, robust to compute noise)")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ddnn.triton.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=str(SHIPPED_CHECKPOINT))
    p.add_argument("--splits", default="block7,input")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--shm-bytes", type=int, default=16 << 20, help="Python backend shared memory per instance")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    results = measure(args.checkpoint, tuple(s for s in args.splits.split(",") if s), args.batch, args.iters,
                      args.warmup, args.shm_bytes)
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
