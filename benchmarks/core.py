"""Core-library benchmarks: offline evaluation throughput and training time per epoch (CPU)."""

from __future__ import annotations

import time

import numpy as np
import torch

from ddnn.checkpoint import load_checkpoint
from ddnn.data import load_split, random_crop_flip, to_tensor
from ddnn.models import build_model
from ddnn.paths import SHIPPED_CHECKPOINT, default_test_source


def eval_throughput(n: int = 2000, batch_size: int = 256, threads: tuple[int, ...] = (1, 2)) -> dict:
    """Images/s of the full multi-exit model (all exits' logits) over the test split, per thread count."""
    ck = load_checkpoint(SHIPPED_CHECKPOINT)
    images = load_split(default_test_source(), "test").images[:n]
    out = {}
    for t in threads:
        torch.set_num_threads(t)
        with torch.inference_mode():
            ck.model(to_tensor(images[:batch_size]))  # warm-up
            t0 = time.perf_counter()
            for i in range(0, n, batch_size):
                ck.model(to_tensor(images[i : i + batch_size]))
            out[str(t)] = n / (time.perf_counter() - t0)
    torch.set_num_threads(max(threads))
    return {"model": ck.spec.label, "images": n, "batch_size": batch_size, "images_per_s_by_threads": out}


def train_epoch_time(steps: int = 20, batch_size: int = 128, threads: int = 2) -> dict:
    """Seconds per training epoch (45,000 images) of the shipped architecture on this CPU,
    extrapolated from ``steps`` timed optimizer steps after two warm-up steps."""
    torch.set_num_threads(threads)
    ck = load_checkpoint(SHIPPED_CHECKPOINT)
    model = build_model(ck.spec).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    images = load_split(default_test_source(), "test").images
    labels = torch.from_numpy(load_split(default_test_source(), "test").labels)
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)

    def step():
        idx = rng.choice(len(images), batch_size, replace=False)
        x = random_crop_flip(to_tensor(images[idx]), gen)
        outs = model(x)
        loss = sum(torch.nn.functional.cross_entropy(o, labels[idx]) for o in outs.values())
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    per_step = (time.perf_counter() - t0) / steps
    gpu = [h["seconds"] for h in ck.meta.get("history", [])]
    init = (ck.meta.get("init") or {})
    return {"model": ck.spec.label, "batch_size": batch_size, "threads": threads, "seconds_per_step": per_step,
            "cpu_seconds_per_epoch": per_step * (45000 // batch_size),
            "gpu_recorded": {"device": ck.meta.get("device"), "batch_size": ck.meta.get("config", {}).get("batch_size"),
                             "median_seconds_per_epoch": float(np.median(gpu)) if gpu else None,
                             "epochs": len(gpu), "first_stage_seconds": init.get("train_seconds"),
                             "fine_tune_seconds": ck.meta.get("train_seconds")}}
