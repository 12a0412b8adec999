"""System benchmarks (issue 3): the services against the same split and policy in-process.

One run starts Triton + cloud and the edge once, then alternates distributed and in-process
measurements on the same images so that both see the same machine state.
"""

from __future__ import annotations

import asyncio
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import torch

from ddnn.checkpoint import load_checkpoint
from ddnn.codec import PAYLOADS, Payload, decode, encode, payload_bytes
from ddnn.data import IMAGE_SHAPE, load_split, to_tensor
from ddnn.inference import CloudRunner, EdgeEngine, InProcessPipeline, cloud_answers
from ddnn.launch import start
from ddnn.models import cloud_part, split_at
from ddnn.outcome import Outcome
from ddnn.paths import REPO_ROOT, SHIPPED_CHECKPOINT, SHIPPED_POLICY, default_test_source
from ddnn.pb.ddnn.v1 import edge_pb2, edge_pb2_grpc
from ddnn.policies import EdgePolicy
from services.loadgen.runner import replay_order

EDGE_EXIT = "block7"


def _loadgen(edge: str, out: Path, n: int, concurrency: int) -> tuple[dict, list[dict]]:
    cmd = [sys.executable, "-m", "services.loadgen", "--edge", edge, "--limit", str(n), "--metrics-port", "-1",
           "--out", str(out), "--progress", "false", "--concurrency", str(concurrency)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{proc.stdout}\n{proc.stderr}")
    with open(out / "samples.csv") as f:
        rows = list(csv.DictReader(f))
    return json.loads((out / "report.json").read_text()), rows


async def _configure(edge: str, **kw) -> None:
    async with grpc.aio.insecure_channel(edge) as ch:
        await edge_pb2_grpc.EdgeStub(ch).Configure(edge_pb2.ConfigureRequest(**kw), timeout=30)


def _in_process(images: np.ndarray, threads: int) -> float:
    torch.set_num_threads(threads)
    ck = load_checkpoint(SHIPPED_CHECKPOINT)
    pipe = InProcessPipeline.from_split(split_at(ck.model, EDGE_EXIT, [EDGE_EXIT]), EdgePolicy.load(SHIPPED_POLICY))
    pipe.run(images[:64])  # warm-up
    t0 = time.perf_counter()
    pipe.run(images, batch_size=32)
    return len(images) / (time.perf_counter() - t0)


def codec_accuracy() -> dict:
    """Accuracy of each payload on the full test split: with the shipped policy (only offloaded
    samples see the codec) and with every sample sent to the cloud (the codec's worst case)."""
    torch.set_num_threads(2)
    ck = load_checkpoint(SHIPPED_CHECKPOINT)
    arrays = load_split(default_test_source(), "test")
    split = split_at(ck.model, EDGE_EXIT, [EDGE_EXIT])
    engine = EdgeEngine(split.edge, EdgePolicy.load(SHIPPED_POLICY))
    feature_cloud, raw_cloud = CloudRunner(split.cloud), CloudRunner(cloud_part(ck.model, 0))
    preds = {p: np.zeros(len(arrays), np.int64) for p in PAYLOADS}
    all_cloud = {p: np.zeros(len(arrays), np.int64) for p in preds}
    with torch.inference_mode():
        for start_ in range(0, len(arrays), 250):
            sl = slice(start_, start_ + 250)
            px = arrays.images[sl]
            res = engine.run(px)
            feats = split.edge(to_tensor(px))[1].numpy()
            for p in preds:
                if p == Payload.RAW:
                    lg = raw_cloud.logits(decode(encode(px, Payload.RAW.value)))
                else:
                    lg = feature_cloud.logits(decode(encode(feats, p)))
                pred, _ = cloud_answers(lg)
                all_cloud[p][sl] = pred
                mixed = res.prediction.copy()
                mixed[res.outcome == Outcome.CLOUD] = pred[res.outcome == Outcome.CLOUD]
                preds[p][sl] = mixed
    y = arrays.labels
    shape = tuple(ck.model.shapes[ck.model.position(EDGE_EXIT)])
    return {p: {"policy_accuracy": float((preds[p] == y).mean()),
                "cloud_only_accuracy": float((all_cloud[p] == y).mean()),
                "bytes_per_offloaded_sample": payload_bytes(shape if p != Payload.RAW else IMAGE_SHAPE, p)}
            for p in preds}


def run(n: int = 2000, concurrency: int = 2, rounds: int = 2, work: Path | None = None, edge_threads: int = 1) -> dict:
    work = work or Path(tempfile.mkdtemp(prefix="ddnn-bench-"))
    arrays = load_split(default_test_source(), "test")
    images = arrays.images[replay_order(len(arrays), n, True, 0)]
    cloud = start("services.cloud", ["--backend", "triton", "--listen", "127.0.0.1:0", "--metrics-port", "0",
                                     "--triton-threads", "1", "--triton-repository", str(work / "triton")],
                  work, timeout=300)
    edge = start("services.edge", ["--cloud", cloud.grpc, "--listen", "127.0.0.1:0", "--metrics-port", "0",
                                   "--torch-threads", str(edge_threads)], work)
    result: dict = {"images": n, "concurrency": concurrency, "edge_threads": edge_threads, "rounds": []}
    try:
        _loadgen(edge.grpc, work / "warm", 256, concurrency)
        for r in range(rounds):  # alternate, so drift in machine load hits both sides
            rep, rows = _loadgen(edge.grpc, work / f"dist{r}", n, concurrency)
            inproc = {str(t): _in_process(images, t) for t in (1, 2)}
            best = max(inproc.values())
            # One value per offloaded batch (rows are in replay order, 32 per image batch; the
            # samples of one batch that went to the cloud share its link and cloud times).
            per_batch = {i // 32: (float(x["link_s"]), float(x["cloud_compute_s"]))
                         for i, x in enumerate(rows) if x["outcome"] == "cloud"}
            links = list(per_batch.values())
            result["rounds"].append({
                "distributed_images_per_s": rep["throughput_samples_per_s"],
                "in_process_images_per_s_by_threads": inproc, "ratio": rep["throughput_samples_per_s"] / best,
                "link_overhead_ms_median": 1000 * float(np.median([a for a, _ in links])) if links else None,
                "link_overhead_ms_p95": 1000 * float(np.percentile([a for a, _ in links], 95)) if links else None,
                "cloud_compute_ms_median": 1000 * float(np.median([b for _, b in links])) if links else None,
                "offloaded_batches": len(links),
                "latency_s": rep["latency_s"], "time_decomposition_s": rep["time_decomposition_s"],
                "exit_rates": rep["exit_rates"], "accuracy": rep["accuracy"]})
        payloads = {}
        for p in PAYLOADS:
            asyncio.run(_configure(edge.grpc, payload=p))
            rep, _ = _loadgen(edge.grpc, work / f"payload-{p}", n, concurrency)
            payloads[p] = {"bytes_per_offloaded_sample": rep["bytes"]["per_offloaded_sample"],
                           "overall_accuracy": rep["accuracy"]["overall"], "cloud_rate": rep["exit_rates"]["cloud"],
                           "images_per_s": rep["throughput_samples_per_s"]}
        result["payloads_distributed"] = payloads
    finally:
        edge.stop()
        cloud.stop()
    result["payloads_full_test_split"] = codec_accuracy()
    return result
